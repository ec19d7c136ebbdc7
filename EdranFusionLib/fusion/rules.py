"""Fusion rules on latent feature batches: the paper's SFNN (section 2.2, in sfnn.py) and the baselines it is
compared with, behind one name-based entry point.

All rules take two latents [B, C, H, W] and return the fused latent with the same shape, device and dtype.
Weights are computed in float32 whatever the latent dtype, so bf16/fp16 inference does not disturb them.
"""

from __future__ import annotations

import torch

from ..choices import ACTIVITY_MEMBERS, DEFAULT_STRATEGY, LATENT_RULES, SOURCE_STRATEGIES
from ..errors import EdranFusionError
from .sfnn import sfnn_weights
from .spatial import fuse_activity, fuse_spatial


def fuse_latents(fa: torch.Tensor, fb: torch.Tensor, strategy: str = DEFAULT_STRATEGY) -> torch.Tensor:
    """Fuse two latent batches with one of :data:`LATENT_RULES` (the others, which need more: strategies.py).

    - ``sfnn-*``: W_a f_a + W_b f_b with the SFNN weights (weights applied to the pre-softmax features).
    - ``fer``: feature energy ratio (MSRPAN), element-wise weight f_a^2 / (f_a^2 + f_b^2).
    - ``fl1n``: L1-norm weights as MSDRA's test code applies them, element-wise |f_a| / (|f_a| + |f_b|).
    - ``average`` and ``max``: element-wise mean and maximum.
    - beyond the paper, ``spatial-sfnn``, ``activity-p<P>`` and ``two-scale``: see :mod:`.spatial`.
    """
    if fa.shape != fb.shape:
        raise EdranFusionError(
            f"latent shapes differ ({tuple(fa.shape)} vs {tuple(fb.shape)}); fuse images of one size"
        )
    if strategy.startswith("sfnn-") and strategy in LATENT_RULES:
        wa, wb = sfnn_weights(fa, fb, strategy.removeprefix("sfnn-"))
        return (fa * wa + fb * wb).to(fa.dtype)  # float32 weights promote the products to float32
    if strategy in ACTIVITY_MEMBERS:  # fer and fl1n are the activity family's P = 2 and P = 1
        return fuse_activity(fa, fb, ACTIVITY_MEMBERS[strategy])
    elif strategy == "average":
        return (fa + fb) / 2
    elif strategy == "max":
        return torch.maximum(fa, fb)
    elif (fused := fuse_spatial(fa, fb, strategy)) is not None:
        return fused
    elif strategy in SOURCE_STRATEGIES:
        raise EdranFusionError(f"strategy '{strategy}' is not a rule on latents alone; fuse through the fuser or "
                               "fusion.strategies.decode_fused")
    else:
        raise EdranFusionError(f"unknown strategy '{strategy}'; choose one of {', '.join(LATENT_RULES)}")
