"""Max-anchored fusion (beyond the paper): the decoded activity fusion pulled toward an anchor of the sources' own
pixels (their maximum, a share of it taken by the guided pyramid)."""

import numpy as np
import pytest
import torch

from EdranFusionLib.evaluation.comparison import pixel_rule
from EdranFusionLib.fusion import anchored
from EdranFusionLib.fusion.anchored import fuse_anchored, source_anchor
from EdranFusionLib.fusion.guided import fuse_guided
from EdranFusionLib.fusion.spatial import fuse_activity

ANCHORED = "max-anchored"


def _images(seed: int, shape=(2, 1, 29, 41)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _sources_and_latents(model, seed: int) -> tuple[torch.Tensor, ...]:
    ya, yb = _images(seed).chunk(2)
    with torch.no_grad():
        return ya, yb, model.encode(ya), model.encode(yb)


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_the_weight_runs_from_the_decoded_fusion_to_the_anchor(model, monkeypatch, weight):
    monkeypatch.setattr(anchored, "ANCHOR_WEIGHT", weight)
    ya, yb, fa, fb = _sources_and_latents(model, 1)
    with torch.no_grad():
        decoded = model.decode(fuse_activity(fa, fb, anchored.ANCHOR_POWER))
        fused = fuse_anchored(model, fa, fb, ya, yb)
        expected = (1 - weight) * decoded + weight * source_anchor(fa, fb, ya, yb)
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=0)
    assert fused.dtype == torch.float32 and fused.shape == ya.shape


def test_the_power_is_read_at_call_time(model, monkeypatch):
    """The study's tuning grid sets the module settings; a cached value would tune nothing."""
    ya, yb, fa, fb = _sources_and_latents(model, 2)
    with torch.no_grad():
        first = fuse_anchored(model, fa, fb, ya, yb)
        monkeypatch.setattr(anchored, "ANCHOR_POWER", 0.0)
        second = fuse_anchored(model, fa, fb, ya, yb)
        w = anchored.ANCHOR_WEIGHT
        average = (1 - w) * model.decode((fa + fb) / 2) + w * source_anchor(fa, fb, ya, yb)
    torch.testing.assert_close(second, average, atol=1e-5, rtol=0)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_the_guided_share_runs_the_anchor_from_the_maximum_to_the_guided_pyramid(model, monkeypatch, share):
    monkeypatch.setattr(anchored, "ANCHOR_GUIDED_SHARE", share)
    ya, yb, fa, fb = _sources_and_latents(model, 4)
    with torch.no_grad():
        anchor = source_anchor(fa, fb, ya, yb)
        expected = (1 - share) * torch.maximum(ya, yb) + share * fuse_guided(fa, fb, ya, yb)
    torch.testing.assert_close(anchor, expected, atol=1e-6, rtol=0)
    if share:
        assert not torch.allclose(anchor, torch.maximum(ya, yb), atol=1e-3)


def test_identical_sources_stay_put_in_the_control():
    y = np.random.default_rng(3).integers(0, 256, (29, 41), dtype=np.uint8)
    np.testing.assert_array_equal(pixel_rule(ANCHORED)("x", y, y.copy()), y)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_the_control_is_the_pixel_activity_blend_anchored_the_same_way(monkeypatch, share):
    """What the evaluation scores as pixel-max-anchored: the formula on the images, no network."""
    monkeypatch.setattr(anchored, "ANCHOR_GUIDED_SHARE", share)
    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(2))
    ya, yb = a / 255.0, b / 255.0
    p = anchored.ANCHOR_POWER
    weight = np.where(ya + yb > 0, ya**p / np.maximum(ya**p + yb**p, 1e-300), 0.5)  # W = |a|^P / (|a|^P + |b|^P)
    blend = weight * ya + (1 - weight) * yb
    ta, tb = (torch.from_numpy(y).float()[None, None] for y in (ya, yb))
    with torch.no_grad():  # the guided pyramid with the images as their own latents: weighed by intensity
        pyramid = fuse_guided(ta, tb, ta, tb)[0, 0].double().numpy()
    anchor = (1 - share) * np.maximum(ya, yb) + share * pyramid
    expected = (1 - anchored.ANCHOR_WEIGHT) * blend + anchored.ANCHOR_WEIGHT * anchor
    control = pixel_rule(ANCHORED)("x", a, b).astype(float)
    assert np.abs(control - np.clip(expected * 255, 0, 255)).max() <= 0.5 + 1e-3  # float32, then nearest level
