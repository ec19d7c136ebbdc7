"""The learned stage-2 fusion (beyond the paper) at fusion time: the candidates the head mixes, and the head
itself, or a clear error.

Unlike the rules in rules.py it needs trained parameters, so it works only with a model whose weights file
holds a fusion head (network/fusion_head.py); ``edranfusion models`` shows which do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..choices import LEARNED_STRATEGY
from ..errors import EdranFusionError
from . import anchored
from .guided import fuse_guided
from .spatial import fuse_activity


def fusion_head_of(model: nn.Module) -> nn.Module:
    """The model's learned fusion head; a user error naming what to do when it has none."""
    head = getattr(model, "fusion_head", None)
    if head is None:
        raise EdranFusionError(
            f"strategy '{LEARNED_STRATEGY}' needs a model trained with a fusion head and this model has none; "
            "choose a bundled model or another strategy (e.g. --strategy sfnn-max)"
        )
    return head


def candidate_decoder(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What decodes the head's first candidate: its own decoder fine-tuned on fused latents if it has one, else
    the autoencoder's."""
    fused_decoder = fusion_head_of(model).fused_decoder
    return model.decode if fused_decoder is None else fused_decoder


def decoded_fusion(decode: Callable[[torch.Tensor], torch.Tensor], fa: torch.Tensor, fb: torch.Tensor
                   ) -> torch.Tensor:
    """The head's first candidate [B, 1, H, W] (float32, in [0, 1]): the activity fusion of the latents (max-anchored
    fusion's P), decoded."""
    return decode(fuse_activity(fa, fb, anchored.ANCHOR_POWER)).float().clamp(0, 1)


def head_candidates(decode: Callable[[torch.Tensor], torch.Tensor], fa: torch.Tensor, fb: torch.Tensor,
                    ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] float32 in [0, 1], in this order: :func:`decoded_fusion`, the sources' pixel maximum and
    their latent-guided pyramid. With the images as their own latents and the identity as ``decode`` these are the
    pixel-domain control's candidates."""
    decoded = decoded_fusion(decode, fa, fb)
    maximum = torch.maximum(ya.float(), yb.float())
    return torch.cat([decoded, maximum, fuse_guided(fa, fb, ya, yb).clamp(0, 1)], dim=1)


def pixel_candidates(ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The pixel-domain control's candidates: :func:`head_candidates` with the images as their own latents and
    the identity as decoder (the pixel activity fusion, the maximum, the intensity-weighted pyramid)."""
    return head_candidates(lambda latent: latent, ya, yb, ya, yb)


def starting_blend() -> tuple[float, float, float]:
    """Max-anchored fusion's fixed weights of the three candidates: where a new head starts."""
    weight, share = anchored.ANCHOR_WEIGHT, anchored.ANCHOR_GUIDED_SHARE
    return 1 - weight, weight * (1 - share), weight * share


def fuse_learned(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor
                 ) -> torch.Tensor:
    """The fused image [B, 1, H, W] (float32): the model's head mixing the candidates of sources ``ya``, ``yb``."""
    return fusion_head_of(model)(fa, fb, head_candidates(candidate_decoder(model), fa, fb, ya, yb))


def learned_weights(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor
                    ) -> torch.Tensor:
    """The head's per-pixel weights of the candidates, [B, 3, H, W]: the same weights on the pixel-domain
    candidates are its control."""
    candidates = head_candidates(candidate_decoder(model), fa, fb, ya, yb)
    return fusion_head_of(model).mixture_weights(fa, fb, candidates)
