"""Strategies that read the source images as well as their latents (guided pyramid, max-anchored and learned
fusion): they refuse to run on latents alone; for the two rules the fuser and the evaluation fuse alike and the
network's result is not its pixel-domain control's (the learned head: Testing/test_fusion_head.py)."""

import numpy as np
import pytest
import torch

from EdranFusionLib.choices import LEARNED_STRATEGY, SOURCE_STRATEGIES
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.evaluation.comparison import latent_methods, pixel_rule
from EdranFusionLib.fusion.fuser import fuse_stacks
from EdranFusionLib.fusion.pipeline import as_model
from EdranFusionLib.fusion.rules import fuse_latents
from EdranFusionLib.fusion.strategies import decode_fused


@pytest.mark.parametrize("strategy", SOURCE_STRATEGIES)
def test_is_not_a_rule_on_latents_alone(model, strategy):
    f = torch.rand(1, 128, 8, 8)
    with pytest.raises(EdranFusionError, match="not a rule on latents alone"):
        fuse_latents(f, f, strategy)
    with pytest.raises(EdranFusionError, match="needs the source images"):
        decode_fused(model, f, f, strategy)


@pytest.mark.parametrize("strategy", [s for s in SOURCE_STRATEGIES if s != LEARNED_STRATEGY])
def test_fuser_and_evaluation_agree_and_differ_from_the_pixel_control(model_path, strategy):
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(2))
    fused = fuse_stacks(a[None] / 255.0, b[None] / 255.0, as_model(str(model_path)), strategy=strategy,
                        precision="fp32")[0]
    evaluated = latent_methods(str(model_path), [strategy])[0].fuse("x", a, b)
    assert np.abs(np.rint(np.clip(fused, 0, 1) * 255) - evaluated).max() <= 1
    assert not np.array_equal(evaluated, pixel_rule(strategy)("x", a, b))
