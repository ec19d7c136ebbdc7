"""Optimizer steps that are taken only when the loss and its gradient are finite.

One bad update (seen in a stage-2 run on SPECT-MRI: NaN weight gradients from a bf16 convolution backward on
this CPU build) would otherwise turn every weight into NaN, and the run would train on for hours and save a
model that fuses nothing. Such a step is skipped with a warning and counted; many of them stop the run with a
clear error, and the checkpoints never hold the damage.
"""

from __future__ import annotations

import sys

import torch

from ..errors import EdranFusionError

MAX_SKIPPED_STEPS = 10


class FiniteSteps:
    """Takes ``optimizer.step()`` for finite losses and gradients; counts (resumably) and warns about the rest."""

    def __init__(self, skipped: int = 0) -> None:
        self.skipped = skipped

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, step_number: int) -> bool:
        """After ``loss.backward()``: step and return True, or skip, warn and return False."""
        # Each gradient on its own: a total norm can overflow for finite gradients (and needs torch >= 2.6).
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in gradients)
        if finite:
            optimizer.step()
            return True
        self.skipped += 1
        print(f"warning: training step {step_number}: the loss or its gradient is not finite; the step is skipped "
              f"({self.skipped} so far)", file=sys.stderr, flush=True)
        if self.skipped > MAX_SKIPPED_STEPS:
            raise EdranFusionError(
                f"{self.skipped} training steps had a non-finite loss or gradient; lower --lr or check the data "
                "(the run folder's checkpoint holds the weights from before them)")
        return False
