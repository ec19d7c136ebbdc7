"""Real-world volumes that must fuse correctly with their geometry kept (issue: reliability)."""

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume

from EdranFusionLib import fuse_volumes


def _fuse(a: np.ndarray, b: np.ndarray, model, **kwargs) -> tuple[sitk.Image, sitk.Image]:
    image_a, image_b = oblique_volume(a), oblique_volume(b)
    return image_a, fuse_volumes(image_a, image_b, model=model, device="cpu", **kwargs)


def _assert_on_grid(reference: sitk.Image, fused: sitk.Image) -> np.ndarray:
    assert fused.GetSize() == reference.GetSize()
    assert fused.GetOrigin() == reference.GetOrigin()
    assert fused.GetSpacing() == reference.GetSpacing()
    assert fused.GetDirection() == reference.GetDirection()
    values = sitk.GetArrayFromImage(fused)
    assert np.isfinite(values).all()
    return values


def test_int16_ct_with_negative_hounsfield_units(model):
    ct = blob_image((4, 24, 24), 0, np.int16)  # -1000 (air) .. +1000 (bone)
    assert ct.min() < -900
    reference, fused = _fuse(ct, blob_image((4, 24, 24), 1), model)
    values = _assert_on_grid(reference, fused)
    low, high = np.percentile(ct, [0.5, 99.5])
    assert low - 1e-3 <= values.min() and values.max() <= high + 1e-3
    assert values.min() < 0  # mapped back to HU, not left in [0, 1]


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_uint16_and_float_mr(model, dtype):
    mr = (blob_image((3, 20, 28), 2, np.float32) * 40).astype(dtype)
    reference, fused = _fuse(mr, blob_image((3, 20, 28), 3), model)
    _assert_on_grid(reference, fused)


def test_many_empty_slices_stay_empty(model):
    a, b = np.zeros((10, 20, 20), np.uint8), np.zeros((10, 20, 20), np.uint8)
    a[4:6], b[4:6] = blob_image((2, 20, 20), 4), blob_image((2, 20, 20), 5)
    reference, fused = _fuse(a, b, model)
    values = _assert_on_grid(reference, fused)
    assert not values[:4].any() and not values[6:].any() and values[4:6].any()


def test_one_slice_volume(model):
    reference, fused = _fuse(blob_image((1, 32, 32), 6), blob_image((1, 32, 32), 7), model)
    _assert_on_grid(reference, fused)


@pytest.mark.parametrize("shape", [(2, 9, 31), (2, 8, 300), (2, 257, 11)])
def test_odd_non_square_and_extreme_aspect_ratios(model, shape):
    reference, fused = _fuse(blob_image(shape, 8), blob_image(shape, 9), model)
    _assert_on_grid(reference, fused)


def test_colour_and_gray_volumes_in_either_order(model):
    gray = blob_image((2, 16, 16), 10)
    colour = np.stack([blob_image((2, 16, 16), s) for s in (11, 12, 13)], axis=-1)
    for a, b in ((gray, colour), (colour, gray)):
        reference, fused = _fuse(a, b, model)
        assert fused.GetNumberOfComponentsPerPixel() == 3
        assert fused.GetDirection() == reference.GetDirection()
