"""BT.601 YCbCr conversion: known values, round trip, recolouring keeps the colour source's chroma."""

import numpy as np

from EdranFusionLib.fusion.color import luminance, recolour, rgb_to_ycbcr, ycbcr_to_rgb


def test_known_values_match_bt601_full_range():
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 128, 128]], dtype=np.uint8)
    ycbcr = rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycbcr[:, 0], [76.245, 149.685, 29.07, 128.0], atol=1e-3)
    np.testing.assert_allclose(ycbcr[3, 1:], [128.0, 128.0], atol=1e-3)
    np.testing.assert_allclose(luminance(rgb), ycbcr[:, 0])


def test_round_trip_is_exact_to_rounding():
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert np.abs(back - rgb).max() < 0.01


def test_recolour_with_own_luminance_gives_the_image_back():
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    again = recolour(luminance(rgb), rgb)
    assert again.dtype == np.uint8
    # Only out-of-gamut clipping and rounding differ.
    assert np.abs(again.astype(int) - rgb).max() <= 1


def test_recolour_keeps_chroma_of_the_colour_source():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    fused_y = np.full((4, 4), 100.0)
    result = recolour(fused_y, rgb)
    np.testing.assert_allclose(rgb_to_ycbcr(result)[..., 1:], rgb_to_ycbcr(rgb)[..., 1:], atol=1.5)
    np.testing.assert_allclose(luminance(result), 100.0, atol=1.0)
