"""Max-anchored fusion (beyond the paper): the decoded activity fusion pulled toward the sources' pixel maximum."""

import numpy as np
import pytest
import torch

from EdranFusionLib.evaluation.comparison import pixel_rule
from EdranFusionLib.fusion import anchored
from EdranFusionLib.fusion.anchored import anchor_to_max, fuse_anchored
from EdranFusionLib.fusion.spatial import fuse_activity

ANCHORED = "max-anchored"


def _images(seed: int, shape=(2, 1, 29, 41)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_the_weight_runs_from_the_decoded_fusion_to_the_pixel_maximum(model, monkeypatch, weight):
    monkeypatch.setattr(anchored, "ANCHOR_WEIGHT", weight)
    ya, yb = _images(1).chunk(2)
    with torch.no_grad():
        fa, fb = model.encode(ya), model.encode(yb)
        decoded = model.decode(fuse_activity(fa, fb, anchored.ANCHOR_POWER))
        fused = fuse_anchored(model, fa, fb, ya, yb)
    expected = (1 - weight) * decoded + weight * torch.maximum(ya, yb)
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=0)
    assert fused.dtype == torch.float32 and fused.shape == ya.shape


def test_the_power_is_read_at_call_time(model, monkeypatch):
    """The study's tuning grid sets the module settings; a cached value would tune nothing."""
    ya, yb = _images(2).chunk(2)
    with torch.no_grad():
        fa, fb = model.encode(ya), model.encode(yb)
        first = fuse_anchored(model, fa, fb, ya, yb)
        monkeypatch.setattr(anchored, "ANCHOR_POWER", 0.0)
        second = fuse_anchored(model, fa, fb, ya, yb)
        average = anchor_to_max(model.decode((fa + fb) / 2), ya, yb)
    torch.testing.assert_close(second, average, atol=1e-5, rtol=0)
    assert not torch.allclose(first, second)


def test_identical_sources_stay_put_in_the_control():
    y = np.random.default_rng(3).integers(0, 256, (29, 41), dtype=np.uint8)
    np.testing.assert_array_equal(pixel_rule(ANCHORED)("x", y, y.copy()), y)


def test_the_control_is_the_pixel_activity_blend_anchored_the_same_way():
    """What the evaluation scores as pixel-max-anchored: the formula on the images, no network."""
    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(2))
    ya, yb = a / 255.0, b / 255.0
    p = anchored.ANCHOR_POWER
    weight = np.where(ya + yb > 0, ya**p / np.maximum(ya**p + yb**p, 1e-300), 0.5)  # W = |a|^P / (|a|^P + |b|^P)
    blend = weight * ya + (1 - weight) * yb
    expected = (1 - anchored.ANCHOR_WEIGHT) * blend + anchored.ANCHOR_WEIGHT * np.maximum(ya, yb)
    control = pixel_rule(ANCHORED)("x", a, b).astype(float)
    assert np.abs(control - expected * 255).max() <= 0.5 + 1e-3  # float32 rounding, then to the nearest level
