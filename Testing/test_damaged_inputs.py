"""Damaged files as interrupted copies and downloads leave them: one `error:` line naming the file, exit 2,
nothing written. Every file is written here by SimpleITK or Pillow and then damaged the way disks and networks
damage files (cut short, a flipped byte, bytes appended)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume
from PIL import Image, ImageFile
from test_cli import assert_user_error, cli, outputs_left

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.io.images import read_image
from EdranFusionLib.io.volumes import read_volume

VOLUME = blob_image((6, 20, 24), 3, np.float32)

# (file written, file holding the voxels, compressed)
FORMATS = [
    ("v.nii", "v.nii", False), ("v.nii.gz", "v.nii.gz", True),
    ("v.nrrd", "v.nrrd", True), ("r.nrrd", "r.nrrd", False),
    ("v.nhdr", "v.raw.gz", True), ("r.nhdr", "r.raw", False),
    ("v.mha", "v.mha", True), ("r.mha", "r.mha", False),
    ("v.mhd", "v.zraw", True), ("r.mhd", "r.raw", False),
]


def _write(folder: Path, name: str, compressed: bool) -> None:
    sitk.WriteImage(oblique_volume(VOLUME), str(folder / name), useCompression=compressed)


def _cut(path: Path, fraction: float = 0.7) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize(("name", "data_file", "compressed"), FORMATS, ids=[f[0] for f in FORMATS])
def test_intact_files_read_back_exactly(tmp_path, name, data_file, compressed):
    _write(tmp_path, name, compressed)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path / name)), VOLUME)


@pytest.mark.parametrize(("name", "data_file", "compressed"), FORMATS, ids=[f[0] for f in FORMATS])
def test_files_cut_short_are_refused(tmp_path, name, data_file, compressed):
    _write(tmp_path, name, compressed)
    _cut(tmp_path / data_file)
    expected = "ends early" if compressed else "cut short"
    with pytest.raises(EdranFusionError, match=expected) as error:
        read_volume(tmp_path / name)
    assert name in str(error.value) and "\n" not in str(error.value)


COMPRESSED = [f for f in FORMATS if f[2]]


@pytest.mark.parametrize(("name", "data_file", "compressed"), COMPRESSED, ids=[f[0] for f in COMPRESSED])
def test_trailing_garbage_after_compressed_data_is_refused(tmp_path, name, data_file, compressed):
    _write(tmp_path, name, compressed)
    path = tmp_path / data_file
    path.write_bytes(path.read_bytes() + b"partial download\x00\x01")
    with pytest.raises(EdranFusionError, match="trailing garbage"):
        read_volume(tmp_path / name)


GZIPPED = [f for f in COMPRESSED if not f[0].endswith((".mha", ".mhd"))]  # MetaImage uses zlib, not gzip


@pytest.mark.parametrize(("name", "data_file", "compressed"), GZIPPED, ids=[f[0] for f in GZIPPED])
def test_a_flipped_byte_fails_the_crc(tmp_path, name, data_file, compressed):
    _write(tmp_path, name, compressed)
    path = tmp_path / data_file
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x5A  # inside the CRC-32 of the gzip trailer: the data inflate, the check fails
    path.write_bytes(bytes(data))
    with pytest.raises(EdranFusionError, match="CRC"):
        read_volume(tmp_path / name)


def test_a_second_gzip_member_is_valid(tmp_path):
    """gzip allows concatenated members (zlib and ITK read them as one stream): not mistaken for garbage."""
    _write(tmp_path, "v.nii", False)
    data = (tmp_path / "v.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_volume(tmp_path / "two.nii.gz")), VOLUME)


def test_missing_detached_data_file(tmp_path):
    _write(tmp_path, "r.nhdr", False)
    (tmp_path / "r.raw").unlink()
    with pytest.raises(EdranFusionError, match="r.raw is missing"):
        read_volume(tmp_path / "r.nhdr")


def test_cli_refuses_a_cut_volume_and_writes_nothing(workdir, model_path):
    _write(workdir, "a.nii.gz", True)
    _write(workdir, "b.nii.gz", True)
    _cut(workdir / "b.nii.gz", 0.9)
    result = cli("fuse", workdir / "a.nii.gz", workdir / "b.nii.gz", "-o", workdir / "out" / "f.nii.gz",
                 "--model", model_path, "--quiet")
    assert_user_error(result, "b.nii.gz is damaged: its gzip stream ends early")
    assert outputs_left(workdir) == []


IMAGE_FORMATS = [("png", {}), ("jpg", {}), ("tif", {}), ("tif", {"compression": "tiff_deflate"}), ("bmp", {})]


@pytest.mark.parametrize("lenient", [False, True], ids=["pillow-default", "LOAD_TRUNCATED_IMAGES-set"])
@pytest.mark.parametrize(("suffix", "options"), IMAGE_FORMATS, ids=["png", "jpg", "tif", "tif-deflate", "bmp"])
def test_images_cut_short_are_refused(tmp_path, monkeypatch, suffix, options, lenient):
    """Pillow opens lazily and, when another library has set LOAD_TRUNCATED_IMAGES, pads a cut image with gray:
    either way the read must fail."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient)
    path = tmp_path / f"image.{suffix}"
    noise = np.random.default_rng(0).integers(0, 256, (96, 128), dtype=np.uint8)
    Image.fromarray(noise).save(path, **options)
    intact = read_image(path)
    if suffix != "jpg":  # lossy
        np.testing.assert_array_equal(intact, noise)
    _cut(path, 0.8)
    with pytest.raises(EdranFusionError, match="image.*truncated or corrupt"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient  # the caller's setting is left as it was


def test_cli_refuses_a_cut_png(workdir, model_path):
    for name, seed in (("a.png", 0), ("b.png", 1)):
        Image.fromarray(blob_image((64, 64), seed)).save(workdir / name)
    _cut(workdir / "b.png", 0.6)
    result = cli("fuse", workdir / "a.png", workdir / "b.png", "-o", workdir / "out" / "f.png", "--model",
                 model_path)
    assert_user_error(result, "b.png")
    assert outputs_left(workdir) == []
