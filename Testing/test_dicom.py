"""DICOM folders as scanners and PACS export them. Every series here is written slice by slice with SimpleITK's
ImageFileWriter and explicit tags (position, orientation, UIDs), then read back by the product: real files."""

from __future__ import annotations

import locale
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image
from test_cli import assert_user_error, cli, outputs_left

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.io.dicom import _pixel_data_cut_short, process_locale_kept
from EdranFusionLib.io.volumes import read_volume, write_volume

SHAPE = (6, 20, 24)  # slices, rows, columns
SPACING = (0.8, 0.9, 2.5)  # column, row, slice (mm)
ORIGIN = (-40.0, 25.5, 12.0)
ANGLE = np.deg2rad(20.0)
# An oblique orientation (rotated about the patient's S-I axis): the rows and columns are not the LPS axes.
ROW = (np.cos(ANGLE), np.sin(ANGLE), 0.0)
COLUMN = (-np.sin(ANGLE), np.cos(ANGLE), 0.0)


def write_series(folder: Path, uid: str, description: str = "T1", *, seed: int = 0,
                 positions: list[float] | None = None, tilt_mm: float = 0.0, first_file: int = 0) -> np.ndarray:
    """One file per slice; ``positions``: distances along the normal (default: evenly spaced); ``tilt_mm``: each
    slice shifted this far along the column direction per slice (a CT gantry tilt)."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = blob_image(SHAPE, seed, np.int16)
    normal = np.cross(ROW, COLUMN)
    positions = positions if positions is not None else [k * SPACING[2] for k in range(SHAPE[0])]
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    for k, along in enumerate(positions):
        plane = sitk.GetImageFromArray(volume[k % SHAPE[0]])
        plane.SetSpacing(SPACING[:2])
        point = np.array(ORIGIN) + along * normal + k * tilt_mm * np.array(COLUMN)
        tags = {
            "0008|0060": "MR", "0020|000d": "1.2.826.0.1.3680043.2.1125.7", "0020|000e": uid,
            "0008|103e": description, "0020|0013": str(k + 1), "0008|0018": f"{uid}.{k + 1}",
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*ROW, *COLUMN)),
            "0020|0032": "\\".join(f"{v:.6f}" for v in point), "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{first_file + k:05d}"))  # PACS exports often have no suffix
        with process_locale_kept():
            writer.Execute(plane)
    return volume


def _element(group: int, element: int, vr: str, value: bytes) -> bytes:
    value += (b"\0" if vr == "UI" else b" ") * (len(value) % 2)
    if vr in ("OB", "SQ", "UN"):
        return struct.pack("<HH2sHI", group, element, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr.encode(), len(value)) + value


def write_non_image_dicom(path: Path, sop_class: str, series_uid: str | None) -> None:
    """A DICOM file without pixels (a DICOMDIR or a structured report), as PACS exports put beside the slices."""
    meta = (_element(0x0002, 0x0001, "OB", b"\0\1") + _element(0x0002, 0x0002, "UI", sop_class.encode())
            + _element(0x0002, 0x0003, "UI", b"1.2.826.0.1.3680043.2.1125.99")
            + _element(0x0002, 0x0010, "UI", b"1.2.840.10008.1.2.1"))
    dataset = _element(0x0008, 0x0016, "UI", sop_class.encode()) + _element(0x0008, 0x0060, "CS", b"SR")
    if series_uid:
        dataset += _element(0x0020, 0x000E, "UI", series_uid.encode())
    header = _element(0x0002, 0x0000, "UL", struct.pack("<I", len(meta)))
    path.write_bytes(b"\0" * 128 + b"DICM" + header + meta + dataset)


def _assert_geometry(image: sitk.Image) -> None:
    """What the files say: origin = first slice's position, spacing, and direction columns = row, column, normal."""
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], ROW, atol=1e-5)
    np.testing.assert_allclose(direction[:, 1], COLUMN, atol=1e-5)
    np.testing.assert_allclose(direction[:, 2], np.cross(ROW, COLUMN), atol=1e-5)


def test_one_series_with_stray_files_reads_back_with_its_geometry(tmp_path):
    expected = write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.1")
    write_non_image_dicom(tmp_path / "DICOMDIR", "1.2.840.10008.1.3.10", None)
    write_non_image_dicom(tmp_path / "SR00001", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.826.0.1.3680043.2.1125.7.9")
    (tmp_path / "README.TXT").write_text("exported by a PACS\n")
    (tmp_path / "thumbs.db").write_bytes(b"\x00\x01garbage")
    image = read_volume(tmp_path)
    _assert_geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)


def test_files_in_any_order_are_sorted_by_position(tmp_path):
    """File names in reverse slice order (some scanners number from the top): positions decide."""
    expected = write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.2")
    for index, path in enumerate(sorted(tmp_path.iterdir())):
        path.rename(tmp_path / f"Z{SHAPE[0] - index:03d}")
    image = read_volume(tmp_path)
    _assert_geometry(image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)


def test_several_series_are_listed_and_one_is_picked_by_uid(tmp_path):
    t1 = write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.3", "T1 MPRAGE", seed=1)
    flair = write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.4", "FLAIR", seed=2, first_file=100)
    with pytest.raises(EdranFusionError) as error:
        read_volume(tmp_path)
    message = str(error.value)
    assert "holds 2 DICOM series" in message and "--series-a" in message and "\n" not in message
    assert "1.2.826.0.1.3680043.2.1125.7.3 ('T1 MPRAGE', 6 slices)" in message
    assert "1.2.826.0.1.3680043.2.1125.7.4 ('FLAIR', 6 slices)" in message
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path, "1.2.826.0.1.3680043.2.1125.7.3")), t1)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path, "1.2.826.0.1.3680043.2.1125.7.4")),
                                  flair)
    with pytest.raises(EdranFusionError, match="has no DICOM series 9.9"):
        read_volume(tmp_path, "9.9")


def test_a_pacs_tree_lists_subfolders_and_a_subfolder_can_be_given(tmp_path):
    write_series(tmp_path / "ST000" / "SE001", "1.2.826.0.1.3680043.2.1125.7.5", "T2", seed=3)
    write_series(tmp_path / "ST000" / "SE002", "1.2.826.0.1.3680043.2.1125.7.6", "PD", seed=4)
    with pytest.raises(EdranFusionError, match=r"in ST000/SE001\).*in ST000/SE002\)"):
        read_volume(tmp_path)
    _assert_geometry(read_volume(tmp_path / "ST000" / "SE002"))


def test_cli_fuses_two_series_of_one_folder_picked_by_uid(workdir, model_path):
    folder = workdir / "export"
    write_series(folder, "1.2.826.0.1.3680043.2.1125.7.7", "T1", seed=5)
    write_series(folder, "1.2.826.0.1.3680043.2.1125.7.8", "FLAIR", seed=6, first_file=100)
    output = workdir / "out" / "fused.nrrd"
    refused = cli("fuse", folder, folder, "-o", output, "--model", model_path, "--quiet")
    assert_user_error(refused, "holds 2 DICOM series")
    result = cli("fuse", folder, folder, "-o", output, "--model", model_path, "--quiet",
                 "--series-a", "1.2.826.0.1.3680043.2.1125.7.7", "--series-b", "1.2.826.0.1.3680043.2.1125.7.8")
    assert result.returncode == 0, result.stderr
    _assert_geometry(sitk.ReadImage(str(output)))
    sitk.WriteImage(sitk.ReadImage(str(output)), str(workdir / "file.nrrd"))
    misused = cli("fuse", workdir / "file.nrrd", folder, "-o", workdir / "out" / "g.nrrd", "--model", model_path,
                  "--series-a", "1.2.826.0.1.3680043.2.1125.7.7", "--series-b", "1.2.826.0.1.3680043.2.1125.7.8")
    assert_user_error(misused, "--series-a picks a series from a DICOM folder")


# Positions in the messages are along the slice normal from the scanner's origin: the series starts at 12 mm.
BROKEN_SERIES = [
    ("missing slice", {"positions": [0, 2.5, 5, 10, 12.5, 15]}, "1 missing slice(s) between 17.00 and 22.00 mm"),
    ("two missing slices", {"positions": [0, 2.5, 10, 12.5, 15, 17.5]}, "2 missing slice(s) between 14.50 and 22.00"),
    ("duplicate slice", {"positions": [0, 2.5, 5, 5, 7.5, 10]}, "two slices at 17.00 mm"),
    ("uneven spacing", {"positions": [0, 2.5, 5, 8.5, 11, 13.5]}, "uneven slice spacing between 17.00 and 20.50"),
    ("gantry tilt", {"tilt_mm": 0.6}, "gantry tilt of 13.5 degrees"),
]


@pytest.mark.parametrize(("case", "layout", "message"), BROKEN_SERIES, ids=[c[0] for c in BROKEN_SERIES])
def test_broken_series_are_refused_naming_the_problem(workdir, model_path, case, layout, message):
    folder = workdir / "series"
    write_series(folder, "1.2.826.0.1.3680043.2.1125.7.10", **layout)
    with pytest.raises(EdranFusionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_volume(folder)
    good = workdir / "good"
    write_series(good, "1.2.826.0.1.3680043.2.1125.7.11")
    result = cli("fuse", good, folder, "-o", workdir / "out" / "f.nrrd", "--model", model_path, "--quiet")
    assert_user_error(result, message)
    assert outputs_left(workdir) == []


def test_a_multi_frame_file_is_one_volume(tmp_path):
    """SimpleITK writes a 3-D image as one multi-frame file (its own series UID), here beside a report."""
    volume = sitk.GetImageFromArray(blob_image(SHAPE, 7, np.uint16))
    volume.SetSpacing(SPACING)
    volume.SetOrigin(ORIGIN)
    sitk.WriteImage(volume, str(tmp_path / "multiframe.dcm"))
    write_non_image_dicom(tmp_path / "SR00001", "1.2.840.10008.5.1.4.1.1.88.11", "1.2.826.0.1.3680043.2.1125.7.9")
    image = read_volume(tmp_path)
    assert image.GetSize() == volume.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), SPACING, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(volume))


def test_a_folder_of_only_non_image_files_is_refused(workdir, model_path):
    folder = workdir / "reports"
    folder.mkdir()
    write_non_image_dicom(folder / "DICOMDIR", "1.2.840.10008.1.3.10", None)
    with pytest.raises(EdranFusionError, match="holds no DICOM images"):
        read_volume(folder)


@pytest.mark.parametrize("which", [0, SHAPE[0] - 1], ids=["first slice", "last slice"])
def test_a_slice_file_cut_short_is_named_not_dropped(tmp_path, which):
    """GDCM cannot parse a cut slice at all; skipping it would silently shorten the volume at either end."""
    write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.12")
    path = sorted(tmp_path.iterdir())[which]
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(EdranFusionError, match=f"1 DICOM image file.*cannot be read.*{path.name}"):
        read_volume(tmp_path)


def test_writing_dicom_leaves_the_process_locale_alone(tmp_path):
    """GDCM sets the C locale while writing orientation tags; text written afterwards must still be UTF-8."""
    before = locale.setlocale(locale.LC_ALL)
    write_volume(sitk.GetImageFromArray(blob_image(SHAPE, 8, np.float32)), tmp_path / "dicom_out")
    assert locale.setlocale(locale.LC_ALL) == before
    assert len(list((tmp_path / "dicom_out").iterdir())) == SHAPE[0]


def test_a_cut_slice_is_found_even_where_gdcm_reads_its_header(tmp_path):
    """SimpleITK before 2.5.4 (Slicer bundles 2.3 and 2.5.2) reads a slice whose pixel data is cut off and fills
    in the rest; the header read before the cut is what such a GDCM returns, so the check must see the cut."""
    write_series(tmp_path, "1.2.826.0.1.3680043.2.1125.7.13")
    path = sorted(tmp_path.iterdir())[0]
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    assert not _pixel_data_cut_short(path, reader)
    path.write_bytes(path.read_bytes()[:-300])
    assert _pixel_data_cut_short(path, reader)
