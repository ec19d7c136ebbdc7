"""Every fusion strategy behind one call: the one place the fuser, the evaluation and the benchmark turn two
latent batches (and, for the guided pyramid, max-anchored and learned fusion, the source images) into the fused
image."""

from __future__ import annotations

import torch
from torch import nn

from ..choices import ANCHORED_STRATEGY, GUIDED_STRATEGY, LEARNED_STRATEGY, SOURCE_STRATEGIES
from ..errors import EdranFusionError
from .anchored import fuse_anchored
from .guided import fuse_guided
from .learned import fuse_learned
from .rules import fuse_latents


def decode_fused(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, strategy: str,
                 sources: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The fused image [B, 1, H, W] (unclamped) by any strategy: the guided pyramid, max-anchored fusion or the
    learned head (all three need the encoder's input images ``sources``), or a rule of rules.py followed by the
    model's decoder."""
    if strategy in SOURCE_STRATEGIES and sources is None:
        raise EdranFusionError(f"strategy '{strategy}' needs the source images as well as their latents")
    if strategy == GUIDED_STRATEGY:
        return fuse_guided(fa, fb, *sources)
    if strategy == ANCHORED_STRATEGY:
        return fuse_anchored(model, fa, fb, *sources)
    if strategy == LEARNED_STRATEGY:
        return fuse_learned(model, fa, fb, *sources)
    return model.decode(fuse_latents(fa, fb, strategy))
