"""`--resample` keeps left on the left: B stored mirrored relative to A (as SPM12's SPECT.nii is relative to
T1.nii) is resampled in world space, so a mark on the patient's left in B lands on the left of the result.

LPS: +x is the patient's left. The mark is put into B's own voxels at a world point on the left; after fusion
on A's grid the result changes there, and not at the mirror-image point on the right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO, blob_image
from test_cli import cli

from EdranFusionLib.io.volumes import align_to

SPM12 = REPO.parent / "shared" / "data" / "volumes" / "spm12"
LEFT = (50.0, -20.0, 8.0)  # mm, LPS: 50 mm to the patient's left
RIGHT = (-LEFT[0], LEFT[1], LEFT[2])


def _marked(image: sitk.Image, point: tuple[float, float, float], value: float) -> sitk.Image:
    """A copy of ``image`` with a 5x5x3-voxel block set to ``value`` around ``point`` (found in its own grid)."""
    marked = sitk.Image(image)
    voxel = int(value) if "integer" in marked.GetPixelIDTypeAsString() else value
    i, j, k = marked.TransformPhysicalPointToIndex(point)
    for di in range(-2, 3):
        for dj in range(-2, 3):
            for dk in range(-1, 2):
                marked[i + di, j + dj, k + dk] = voxel
    return marked


def _slab(image: sitk.Image, z_mm: float, half_slices: int = 3) -> sitk.Image:
    """The few axial slices around ``z_mm`` (geometry kept), so the test fuses seconds' worth of slices."""
    k = image.TransformPhysicalPointToIndex((0.0, 0.0, z_mm))[2]
    size = list(image.GetSize())
    size[2] = 2 * half_slices + 1
    return sitk.RegionOfInterest(image, size, [0, 0, k - half_slices])


def _fused_change(tmp_path: Path, model_path: Path, a: sitk.Image, b: sitk.Image, marked_b: sitk.Image) -> tuple:
    """Fuse A with B and with marked B through the CLI (--resample); |difference| at LEFT and RIGHT."""
    sitk.WriteImage(a, str(tmp_path / "a.nii.gz"))
    results = []
    for name, image in (("b", b), ("marked", marked_b)):
        sitk.WriteImage(image, str(tmp_path / f"{name}.nii.gz"))
        output = tmp_path / f"fused_{name}.nii.gz"
        result = cli("fuse", tmp_path / "a.nii.gz", tmp_path / f"{name}.nii.gz", "-o", output, "--model",
                     model_path, "--resample", "--quiet")
        assert result.returncode == 0, result.stderr
        results.append(sitk.ReadImage(str(output)))
    assert results[1].GetDirection() == a.GetDirection() and results[1].GetOrigin() == a.GetOrigin()
    change = sitk.GetArrayFromImage(results[1]) - sitk.GetArrayFromImage(results[0])

    def around(point: tuple[float, float, float]) -> float:
        i, j, k = a.TransformPhysicalPointToIndex(point)
        return float(np.abs(change[k - 1 : k + 2, j - 2 : j + 3, i - 2 : i + 3]).max())

    return around(LEFT), around(RIGHT)


def _assert_left_stays_left(a: sitk.Image, marked_b: sitk.Image, mark: float) -> None:
    """B resampled onto A's grid holds the mark on the left, not on the right."""
    on_a = align_to(a, marked_b, resample=True)
    left = on_a[a.TransformPhysicalPointToIndex(LEFT)]
    right = on_a[a.TransformPhysicalPointToIndex(RIGHT)]
    assert left == pytest.approx(mark, rel=1e-3) and right != pytest.approx(mark, rel=1e-3)


def test_synthetic_mirrored_storage_keeps_left_on_the_left(tmp_path, model_path):
    """A stored R->L (x index growing to the left), B the same head stored L->R: same size, mirrored directions."""
    head = blob_image((7, 48, 64), 0, np.float32)
    a = sitk.GetImageFromArray(head)
    a.SetSpacing((2.0, 2.0, 2.0))
    a.SetOrigin((-63.0, -47.0, 2.0))
    b = sitk.GetImageFromArray(head[:, :, ::-1].copy() * 0.5)
    b.SetSpacing((2.0, 2.0, 2.0))
    b.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    b.SetOrigin((63.0, -47.0, 2.0))
    mark = float(sitk.GetArrayViewFromImage(b).max())
    marked_b = _marked(b, LEFT, mark)
    _assert_left_stays_left(a, marked_b, mark)
    left, right = _fused_change(tmp_path, model_path, a, b, marked_b)
    assert left > 10 * right and left > 0


@pytest.mark.skipif(not SPM12.is_dir(), reason=f"SPM12 templates not found at {SPM12} (../shared is absent)")
def test_spm12_spect_stored_mirrored_fuses_with_t1_left_on_the_left(tmp_path, model_path):
    t1 = sitk.ReadImage(str(SPM12 / "T1.nii"))
    spect = sitk.ReadImage(str(SPM12 / "SPECT.nii"))
    assert np.sign(t1.GetDirection()[0]) != np.sign(spect.GetDirection()[0])  # the premise: mirrored storage
    mark = float(sitk.GetArrayViewFromImage(spect).max())
    marked = _marked(spect, LEFT, mark)
    _assert_left_stays_left(t1, marked, mark)
    a, b, marked_b = (_slab(image, LEFT[2]) for image in (t1, spect, marked))
    left, right = _fused_change(tmp_path, model_path, a, b, marked_b)
    assert left > 10 * right and left > 0
