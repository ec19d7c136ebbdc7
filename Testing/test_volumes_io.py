"""Volume files: geometry through real NIfTI/NRRD/MHA/MHD/DICOM round trips, atomic writes, bad files."""

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.io.volumes import read_volume, write_volume


def _assert_same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-5) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tolerance)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_oblique_geometry_and_values(tmp_path, suffix):
    image = oblique_volume(blob_image((5, 12, 14), 0, np.float32))
    path = tmp_path / f"volume{suffix}"
    write_volume(image, path)
    back = read_volume(path)
    _assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")], "temporary files left behind"


def test_dicom_series_round_trip(tmp_path):
    image = oblique_volume(blob_image((4, 10, 12), 1, np.float32), spacing=(0.8, 0.8, 2.0))
    write_volume(image, tmp_path / "series")
    back = read_volume(tmp_path / "series")
    _assert_same_geometry(image, back, tolerance=1e-4)
    original = sitk.GetArrayFromImage(image)
    step = (original.max() - original.min()) / 65535
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), original, atol=step)


def test_folder_with_two_dicom_series_is_rejected(tmp_path):
    for seed, name in ((2, "one"), (3, "two")):
        write_volume(oblique_volume(blob_image((3, 8, 8), seed, np.float32)), tmp_path / name)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("one", "two"):
        for file in (tmp_path / name).iterdir():
            file.rename(mixed / f"{name}_{file.name}")
    with pytest.raises(EdranFusionError, match="2 DICOM series"):
        read_volume(mixed)


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "volume.nii.gz"
    write_volume(oblique_volume(blob_image((5, 16, 16), 4, np.float32)), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(EdranFusionError, match="gzip stream ends early"):
        read_volume(path)


def test_missing_and_unsupported_inputs(tmp_path):
    with pytest.raises(EdranFusionError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EdranFusionError, match="not a supported volume"):
        read_volume(tmp_path / "notes.txt")


def test_existing_output_is_replaced_whole(tmp_path):
    path = tmp_path / "out.nrrd"
    write_volume(oblique_volume(blob_image((3, 8, 8), 5, np.float32)), path)
    newer = oblique_volume(blob_image((3, 8, 8), 6, np.float32))
    write_volume(newer, path)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(path)), sitk.GetArrayFromImage(newer))


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    with pytest.raises(EdranFusionError, match="does not exist"):
        write_volume(oblique_volume(blob_image((3, 8, 8), 7, np.float32)), tmp_path / "missing" / "out.nii.gz")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(EdranFusionError, match="not writable"):
            write_volume(oblique_volume(blob_image((3, 8, 8), 8, np.float32)), locked / "out.nii.gz")
    finally:
        locked.chmod(0o700)


def test_stroke_sample_is_bundled_and_readable():
    sample = Path(__file__).resolve().parents[1] / "EdranFusionLib" / "sample_data" / "stroke"
    t2, flair = read_volume(sample / "T2.nii.gz"), read_volume(sample / "FLAIR.nii.gz")
    assert t2.GetSize() == flair.GetSize() == (124, 160, 140)
    assert (sample / "LICENSE").read_text().count("MIT License") == 1
