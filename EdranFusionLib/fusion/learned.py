"""The learned stage-2 fusion (beyond the paper) at fusion time: the model's own head, or a clear error.

Unlike the rules in rules.py it needs trained parameters, so it works only with a model whose weights file
holds a fusion head (network/fusion_head.py); ``edranfusion models`` shows which do.
"""

from __future__ import annotations

import torch
from torch import nn

from ..choices import LEARNED_STRATEGY
from ..errors import EdranFusionError


def fusion_head_of(model: nn.Module) -> nn.Module:
    """The model's learned fusion head; a user error naming what to do when it has none."""
    head = getattr(model, "fusion_head", None)
    if head is None:
        raise EdranFusionError(
            f"strategy '{LEARNED_STRATEGY}' needs a model trained with a fusion head and this model has none; "
            "choose a bundled model or another strategy (e.g. --strategy sfnn-max)"
        )
    return head


def learned_weights(model: nn.Module, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    """The head's per-pixel weight of A, [B, 1, H, W] in (0, 1): the same blend on pixels is its control."""
    return fusion_head_of(model).weight_map(fa, fb)
