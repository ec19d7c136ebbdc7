"""Max-anchored fusion (beyond the paper): the decoded activity fusion, anchored to the sources' pixel maximum.

The decoded latent rules have the network's best intensity fidelity (PSNR, SSIM, FSIM), but the decoder softens
edges, so their edge transfer (Qabf) stays below the plain pixel maximum, which keeps each source's bright
structure (bone from CT, cortex from MRI) at full contrast. Here the fused image is
``(1 - ANCHOR_WEIGHT) * decode(activity-P fusion of the latents) + ANCHOR_WEIGHT * max(A, B)``: the network's
fused image, pulled toward the maximum of the sources' own pixels. P and the weight were chosen on training
series (evaluation/study.py tune, docs/RESULTS.md).

The pixel-domain control (evaluation/comparison.pixel_rule) is the same blend with the activity rule run on the
images themselves (no encoder, no decoder): what the network's fused image adds over a pixel activity blend
anchored the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from .spatial import fuse_activity

# Chosen on training series only (evaluation/study.py tune; docs/RESULTS.md), never on validation.
ANCHOR_POWER = 0.5
ANCHOR_WEIGHT = 0.5


def anchor_to_max(fused: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """``fused`` [B, 1, H, W] pulled toward the sources' pixel maximum by ``ANCHOR_WEIGHT`` (float32)."""
    return (1 - ANCHOR_WEIGHT) * fused.float() + ANCHOR_WEIGHT * torch.maximum(ya.float(), yb.float())


def fuse_anchored(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor
                  ) -> torch.Tensor:
    """The fused image [B, 1, H, W] (float32, unclamped): the model's decoded activity fusion of ``fa``, ``fb``
    anchored to the maximum of the sources ``ya``, ``yb`` (module settings read at call time, so the study's
    tuning grid can set them)."""
    return anchor_to_max(model.decode(fuse_activity(fa, fb, ANCHOR_POWER)), ya, yb)

