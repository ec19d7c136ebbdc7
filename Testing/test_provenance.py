"""Every fused output records what made it (version, model + sha256, strategy, device, precision), and the
record survives writing and reading back in each format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume
from PIL import Image

from EdranFusionLib import __version__, fuse_volumes, provenance_of
from EdranFusionLib.commands.cli import main
from EdranFusionLib.fusion.provenance import (
    NIFTI_DESCRIP_LIMIT,
    compact,
    from_compact,
    from_text_fields,
    read_back,
)
from EdranFusionLib.io.images import read_image_metadata
from EdranFusionLib.io.volumes import read_volume, write_volume
from EdranFusionLib.io.weights import bundled_models, sha256_of


@pytest.fixture(scope="module")
def fused_volume(model_path: Path) -> sitk.Image:
    a = oblique_volume(blob_image((4, 24, 20), 0, np.float32))
    b = oblique_volume(blob_image((4, 24, 20), 1, np.float32))
    return fuse_volumes(a, b, model=model_path, strategy="sfnn-mean", device="cpu", precision="fp32")


def expected_record(model_path: Path) -> dict[str, str]:
    return {"product": "EdranFusion", "version": __version__, "model": model_path.stem,
            "model_sha256": sha256_of(model_path), "strategy": "sfnn-mean", "device": "cpu", "precision": "fp32"}


def test_fused_volume_carries_the_record(fused_volume, model_path):
    assert read_back(fused_volume) == expected_record(model_path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_record_survives_nrrd_and_mha(tmp_path, fused_volume, model_path, suffix):
    write_volume(fused_volume, tmp_path / f"fused{suffix}")
    assert read_back(read_volume(tmp_path / f"fused{suffix}")) == expected_record(model_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_record_survives_nifti_descrip_with_short_sha(tmp_path, fused_volume, model_path, suffix):
    write_volume(fused_volume, tmp_path / f"fused{suffix}")
    back = read_volume(tmp_path / f"fused{suffix}")
    assert len(back.GetMetaData("descrip")) <= NIFTI_DESCRIP_LIMIT
    record, expected = read_back(back), expected_record(model_path)
    assert expected["model_sha256"].startswith(record.pop("model_sha256"))
    assert record == {k: v for k, v in expected.items() if k != "model_sha256"}


def test_record_survives_dicom_in_every_slice(tmp_path, fused_volume, model_path):
    write_volume(fused_volume, tmp_path / "series")
    slices = sorted((tmp_path / "series").iterdir())
    assert len(slices) == 4
    assert all(read_back(sitk.ReadImage(str(path))) == expected_record(model_path) for path in slices)


def test_compact_line_fits_nifti_for_long_model_names():
    record = {"product": "EdranFusion", "version": __version__, "model": "a-very-long-weights-file-name-" * 4,
              "model_sha256": "f" * 64, "strategy": "sfnn-identity", "device": "cuda", "precision": "fp16"}
    line = compact(record)
    assert len(line) <= NIFTI_DESCRIP_LIMIT
    back = from_compact(line)
    assert back["strategy"] == "sfnn-identity" and back["precision"] == "fp16" and back["model_sha256"] == "f" * 16


def test_bundled_model_is_named_with_its_card_checksum():
    general = bundled_models()["general"]
    record = provenance_of("general", "sfnn-max", device="cpu", precision="fp32")
    assert record["model"] == "general" and record["model_sha256"] == general.sha256


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".bmp"])
def test_fused_image_files_carry_the_record(tmp_path, model_path, suffix):
    for name, seed in (("a", 0), ("b", 1)):
        Image.fromarray(blob_image((32, 40), seed)).save(tmp_path / f"{name}.png")
    output = tmp_path / f"fused{suffix}"
    code = main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(output), "--model",
                 str(model_path), "--strategy", "sfnn-mean", "--device", "cpu", "--precision", "fp32", "--quiet"])
    assert code == 0
    assert from_text_fields(read_image_metadata(output)) == expected_record(model_path)
    if suffix == ".png":  # plain PNG text chunks, readable by any PNG tool
        assert Image.open(output).text["EdranFusion.version"] == __version__


def test_folder_output_pngs_carry_the_record(tmp_path, model_path):
    for folder in ("A", "B"):
        (tmp_path / folder).mkdir()
        Image.fromarray(blob_image((24, 24), folder == "B")).save(tmp_path / folder / "1.png")
    code = main(["fuse", str(tmp_path / "A"), str(tmp_path / "B"), "-o", str(tmp_path / "out"), "--model",
                 str(model_path), "--strategy", "sfnn-mean", "--device", "cpu", "--precision", "fp32", "--quiet"])
    assert code == 0
    assert from_text_fields(read_image_metadata(tmp_path / "out" / "1.png")) == expected_record(model_path)


def test_bmp_record_is_a_json_sidecar(tmp_path, model_path):
    Image.fromarray(blob_image((16, 16), 0)).save(tmp_path / "a.png")
    Image.fromarray(blob_image((16, 16), 1)).save(tmp_path / "b.png")
    assert main(["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.bmp"),
                 "--model", str(model_path), "--quiet"]) == 0
    sidecar = json.loads((tmp_path / "f.bmp.json").read_text())
    assert sidecar["EdranFusion.model_sha256"] == sha256_of(model_path)
