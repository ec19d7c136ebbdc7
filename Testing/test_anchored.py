"""Max-anchored fusion (beyond the paper): the decoded activity fusion pulled toward the sources' pixel maximum."""

import numpy as np
import pytest
import torch

from EdranFusionLib.evaluation.comparison import pixel_rule
from EdranFusionLib.fusion import anchored
from EdranFusionLib.fusion.anchored import anchor_to_max, fuse_anchored, pixel_anchored
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
    y = _images(3)[:1]
    torch.testing.assert_close(pixel_anchored(y, y.clone()), y, atol=1e-6, rtol=0)


def test_the_control_is_the_pixel_activity_blend_anchored_the_same_way():
    ya, yb = _images(4).chunk(2)
    p = anchored.ANCHOR_POWER
    weight = ya**p / (ya**p + yb**p)  # the activity rule on pixels: W = |a|^P / (|a|^P + |b|^P)
    blend = weight * ya + (1 - weight) * yb
    expected = (1 - anchored.ANCHOR_WEIGHT) * blend + anchored.ANCHOR_WEIGHT * torch.maximum(ya, yb)
    torch.testing.assert_close(pixel_anchored(ya, yb), expected, atol=1e-5, rtol=0)


def test_the_control_is_what_the_evaluation_scores_as_pixel_max_anchored():
    rng = np.random.default_rng(5)
    a, b = (rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(2))
    ya, yb = (torch.from_numpy(x / 255.0).float()[None, None] for x in (a, b))
    control = np.clip(np.rint(pixel_anchored(ya, yb)[0, 0].double().numpy() * 255), 0, 255)
    np.testing.assert_array_equal(pixel_rule(ANCHORED)("x", a, b), control.astype(np.uint8))
