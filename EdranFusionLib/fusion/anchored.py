"""Max-anchored fusion (beyond the paper): the decoded activity fusion, anchored to the sources' own pixels.

The decoded latent rules have the network's best intensity fidelity (PSNR, SSIM, FSIM), but the decoder softens
edges, so their edge transfer (Qabf, FMI_edge) stays below the plain pixel maximum, which keeps each source's
bright structure (bone from CT, cortex from MRI) at full contrast. Here the fused image is
``(1 - ANCHOR_WEIGHT) * decode(activity-P fusion of the latents) + ANCHOR_WEIGHT * anchor``: the network's fused
image pulled toward an anchor made of the sources' own pixels, the pixel maximum with a share
``ANCHOR_GUIDED_SHARE`` of it taken by the network-guided pyramid (guided.py), whose per-level choice of the
stronger source detail adds the edges the maximum drops where the darker source has them. P, the weight and
the share were chosen on training series (evaluation/study.py tune, docs/RESULTS.md).

The pixel-domain control (evaluation/comparison.pixel_rule) is the same blend with the activity rule and the
pyramid run on the images themselves (no encoder, no decoder): what the network adds over pixel rules
anchored the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from .guided import fuse_guided
from .spatial import fuse_activity

# Chosen on training series only (evaluation/study.py tune; docs/RESULTS.md), never on validation.
ANCHOR_POWER = 2.0
ANCHOR_WEIGHT = 0.75
ANCHOR_GUIDED_SHARE = 0.25


def source_anchor(fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The anchor [B, 1, H, W] (float32): the sources' pixel maximum, ``ANCHOR_GUIDED_SHARE`` of it replaced by
    their guided pyramid (computed only when the share is not 0)."""
    maximum = torch.maximum(ya.float(), yb.float())
    if ANCHOR_GUIDED_SHARE == 0:
        return maximum
    return (1 - ANCHOR_GUIDED_SHARE) * maximum + ANCHOR_GUIDED_SHARE * fuse_guided(fa, fb, ya, yb)


def fuse_anchored(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor
                  ) -> torch.Tensor:
    """The fused image [B, 1, H, W] (float32, unclamped): the model's decoded activity fusion of ``fa``, ``fb``
    pulled toward the anchor of the sources ``ya``, ``yb`` (module settings read at call time, so the study's
    tuning grid can set them)."""
    decoded = model.decode(fuse_activity(fa, fb, ANCHOR_POWER)).float()
    return (1 - ANCHOR_WEIGHT) * decoded + ANCHOR_WEIGHT * source_anchor(fa, fb, ya, yb)
