"""The network-guided pyramid (beyond the paper): exact pyramids, source pixels kept, weights from both inputs."""

import numpy as np
import pytest
import torch

from EdranFusionLib.evaluation.comparison import pixel_rule
from EdranFusionLib.fusion.fuser import fuse_stacks
from EdranFusionLib.fusion.guided import (
    collapse,
    fuse_guided,
    guided_weights,
    laplacian_pyramid,
    pyramid_blend,
)

GUIDED = "guided-pyramid"


def _images(seed: int, shape=(2, 1, 37, 50)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("levels", [0, 1, 3, 6])
@pytest.mark.parametrize("shape", [(1, 1, 37, 50), (2, 1, 16, 16), (1, 1, 1, 9)])
def test_pyramid_collapses_back_exactly(levels, shape):
    x = _images(levels, shape)
    pyramid = laplacian_pyramid(x, levels)
    assert len(pyramid) == levels + 1
    torch.testing.assert_close(collapse(pyramid), x, atol=1e-6, rtol=0)


def test_identical_sources_come_back_unchanged():
    y = _images(1)
    torch.testing.assert_close(pyramid_blend(y, y.clone(), torch.full_like(y, 0.3)), y, atol=1e-6, rtol=0)


def test_an_empty_source_leaves_the_other_unchanged():
    y, empty = _images(2), torch.zeros(2, 1, 37, 50)
    f = torch.rand(2, 8, 37, 50)
    weight = guided_weights(torch.zeros_like(f), f, empty, y)
    assert weight.max() == 0  # no activity: no weight
    torch.testing.assert_close(fuse_guided(torch.zeros_like(f), f, empty, y), y, atol=1e-6, rtol=0)


def test_weights_are_symmetric_and_follow_the_latents():
    ya, yb = _images(3).chunk(2)
    fa, fb = torch.rand(1, 8, 37, 50), torch.rand(1, 8, 37, 50)
    w = guided_weights(fa, fb, ya, yb)
    torch.testing.assert_close(guided_weights(fb, fa, yb, ya), 1 - w)
    assert w.shape == (1, 1, 37, 50) and w.dtype == torch.float32
    louder = guided_weights(4 * fa, fb, ya, yb)  # the same sources, a stronger latent for A
    assert (louder >= w - 1e-6).all() and louder.mean() > w.mean()


def test_details_come_from_the_source_with_the_stronger_edge():
    flat = torch.full((1, 1, 32, 32), 0.5)
    edge = flat.clone()
    edge[..., 16:] = 0.9
    fused = pyramid_blend(flat, edge, torch.full_like(flat, 0.5), levels=3)
    # Across the edge the step keeps nearly its full 0.4 although its source is blended at one half (0.2).
    assert fused[..., 8, 16] - fused[..., 8, 15] > 0.35


def test_fuser_keeps_source_pixels_in_float32(model):
    a = np.random.default_rng(0).random((3, 24, 36), dtype=np.float32)
    fused = fuse_stacks(a, a.copy(), model, strategy=GUIDED, precision="bf16", batch_size=2)
    np.testing.assert_allclose(fused, a, atol=1e-5)  # bf16 latents weigh; the pixels are not rounded to bf16


def test_the_control_weighs_by_intensity():
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(2))
    ya, yb = (torch.from_numpy(x / 255.0).float()[None, None] for x in (a, b))
    control = pyramid_blend(ya, yb, guided_weights(ya, yb, ya, yb))[0, 0].clamp(0, 1).numpy() * 255
    np.testing.assert_array_equal(pixel_rule(GUIDED)("x", a, b), np.rint(control).astype(np.uint8))


def test_a_detail_window_keeps_one_source_over_a_region_instead_of_alternating_per_pixel():
    """Two textures of equal strength: per pixel the larger coefficient flips between them (mottling); the
    window-mean energy choice takes each region from one source. Window 1 is the per-pixel choice itself."""
    a, b = _images(5, (1, 1, 64, 64)), _images(6, (1, 1, 64, 64))
    band_a, band_b = laplacian_pyramid(a, 1)[0], laplacian_pyramid(b, 1)[0]
    coarse = laplacian_pyramid((a + b) / 2, 1)[1]  # the coarse level that weight 1/2 blends

    def detail(detail_window: int) -> torch.Tensor:
        fused = pyramid_blend(a, b, torch.full_like(a, 0.5), 1, detail_window)
        return fused - collapse([torch.zeros_like(a), coarse])

    torch.testing.assert_close(detail(1), torch.where(band_a.abs() >= band_b.abs(), band_a, band_b),
                               atol=1e-6, rtol=0)

    def switches(detail_window: int) -> float:
        from_a = (detail(detail_window) - band_a).abs() < 1e-6
        return float((from_a[..., 1:] != from_a[..., :-1]).float().mean())

    assert switches(1) > 0.4 and switches(5) < switches(1) / 2  # white noise: 0.50 against 0.21
