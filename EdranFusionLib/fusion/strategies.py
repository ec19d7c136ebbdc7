"""Every fusion strategy behind one call: the one place the fuser, the evaluation and the benchmark turn two
latent batches (and, for the guided pyramid, the source images) into the fused image."""

from __future__ import annotations

import torch
from torch import nn

from ..choices import GUIDED_STRATEGY, LEARNED_STRATEGY
from ..errors import EdranFusionError
from .guided import fuse_guided
from .learned import fusion_head_of
from .rules import fuse_latents


def decode_fused(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, strategy: str,
                 sources: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The fused image [B, 1, H, W] (unclamped) by any strategy: the learned head, the guided pyramid (needs the
    encoder's input images ``sources``), or a rule of rules.py followed by the model's decoder."""
    if strategy == LEARNED_STRATEGY:
        return fusion_head_of(model)(fa, fb)
    if strategy == GUIDED_STRATEGY:
        if sources is None:
            raise EdranFusionError(f"strategy '{strategy}' needs the source images as well as their latents")
        return fuse_guided(fa, fb, *sources)
    return model.decode(fuse_latents(fa, fb, strategy))
