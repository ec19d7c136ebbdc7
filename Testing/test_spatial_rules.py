"""Spatial fusion rules (beyond the paper): limits of the activity family, locality, shape/dtype/batch behaviour."""

import pytest
import torch

from EdranFusionLib.choices import SPATIAL_STRATEGIES, is_strategy
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.fusion.rules import fuse_latents
from EdranFusionLib.fusion.spatial import (
    activity_weights,
    fuse_activity,
    fuse_two_scale,
    spatial_sfnn_weights,
    window_mean,
)

RULES = (*SPATIAL_STRATEGIES, "activity-p0", "activity-p0.5", "activity-p1.5")


def _latents(seed: int, shape=(3, 64, 20, 28)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_activity_limits_are_average_fl1n_and_fer():
    fa, fb = _latents(0), _latents(1)
    torch.testing.assert_close(fuse_activity(fa, fb, 0.0), fuse_latents(fa, fb, "average"))
    torch.testing.assert_close(fuse_activity(fa, fb, 1.0), fuse_latents(fa, fb, "fl1n"))
    torch.testing.assert_close(fuse_activity(fa, fb, 2.0), fuse_latents(fa, fb, "fer"))
    torch.testing.assert_close(fuse_latents(fa, fb, "activity-p2"), fuse_latents(fa, fb, "fer"))


def test_large_power_tends_to_the_larger_magnitude_without_overflow():
    fa = torch.tensor([1e30, 2.0, -3.0, 0.0]).view(1, 4, 1, 1)
    fb = torch.tensor([1e-30, 1.0, 1.0, 0.0]).view(1, 4, 1, 1)
    weights = activity_weights(fa, fb, 8.0).flatten()
    assert torch.isfinite(weights).all()
    assert weights[0] == 1.0 and weights[1] > 0.99 and weights[2] > 0.99 and weights[3] == 0.5


def test_activity_power_out_of_range_is_a_user_error():
    with pytest.raises(EdranFusionError, match="between 0 and 8"):
        fuse_latents(_latents(0), _latents(1), "activity-p9")
    assert is_strategy("activity-p0.25") and not is_strategy("activity-pX")


def test_spatial_sfnn_weights_vary_per_pixel_and_follow_local_activity():
    fa, fb = torch.zeros(1, 8, 16, 16), torch.zeros(1, 8, 16, 16)
    fa[:, 0, :, :8] = 10.0   # A is peaked (one dominant channel) on the left half
    fb[:, 0, :, 8:] = 10.0   # B on the right half
    weights = spatial_sfnn_weights(fa, fb, window=3)
    assert weights.shape == (1, 1, 16, 16)
    assert weights[0, 0, :, :6].min() > 0.7 and weights[0, 0, :, 10:].max() < 0.3


def test_two_scale_takes_the_base_average_and_the_stronger_detail():
    flat = torch.full((1, 1, 32, 32), 0.4)
    textured = 0.6 + 0.1 * (torch.arange(32.0).remainder(2) * 2 - 1).expand(1, 1, 32, 32)
    fused = fuse_two_scale(flat, textured, base_window=5, energy_window=3)
    inner = fused[..., 8:-8, 8:-8]
    assert inner.mean().item() == pytest.approx(0.5, abs=0.02)  # bases averaged
    detail = inner - window_mean(fused, 5)[..., 8:-8, 8:-8]
    assert detail.abs().mean().item() > 0.06  # the texture keeps most of its contrast (0.1 in, 0.02 lost to the window)


def test_even_window_is_a_user_error():
    with pytest.raises(EdranFusionError, match="odd"):
        window_mean(torch.zeros(1, 1, 8, 8), 4)


@pytest.mark.parametrize("strategy", RULES)
def test_spatial_rules_do_not_depend_on_the_batch(strategy):
    fa, fb = _latents(4), _latents(5)
    batched = fuse_latents(fa, fb, strategy)
    single = torch.cat([fuse_latents(fa[i:i + 1], fb[i:i + 1], strategy) for i in range(len(fa))])
    torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("strategy", RULES)
def test_spatial_rules_run_on_one_channel_pixels(strategy):
    a, b = torch.rand(2, 1, 24, 24), torch.rand(2, 1, 24, 24)
    fused = fuse_latents(a, b, strategy)
    assert fused.shape == a.shape
    assert (fused >= torch.minimum(a, b).min() - 1e-6).all() and (fused <= 1.5).all()
