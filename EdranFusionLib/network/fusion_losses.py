"""Stage-2 fusion loss (beyond the paper): fusion has no ground truth, so the fused image is pulled toward both
sources at once.

- intensity: PSNR of F against both sources together, 10 log10(1 / mean of MSE(F, A) and MSE(F, B)), as a
  loss in units of 10 dB. Not the mean of the two PSNRs in dB: that rewards copying one source (F = A is
  infinitely close to A), which a first trial learned to do within a few epochs; this one peaks at the average.
  With ``intensity_target="max"`` it is the PSNR of F against the element-wise maximum of the sources instead
  (the intensity term of common unsupervised fusion networks: bright structures of either source kept);
- structure: 1 - the mean over the two sources of SSIM(F, source) (11x11 Gaussian window, sigma 1.5);
- edges: L1 distance of F's Sobel gradient to the stronger of the two sources' gradients at each pixel,
  relative to that gradient's mean magnitude;
- fsim and qabf: 1 - the mean over the two sources of FSIM(F, source), and 1 - Qabf(F; A, B), the metrics
  themselves in torch (metric_losses.py): the edge term alone traded FSIM for edge strength.

These are differentiable forms of metrics the evaluation reports (PSNR, SSIM, FSIM, Qabf; the edge term is close
to what Qabf rewards), so scores of a model trained with it are partly scores on its own objective: the model
card says so, and the validation series are never trained on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from . import metric_losses
from .losses import sobel

INTENSITY_TARGETS = ("average", "max")
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_C1, _C2 = 0.01**2, 0.03**2  # data range 1
_MIN_MSE = 1e-6  # 60 dB: identical flat crops (background) must not dominate the mean


def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    offsets = torch.arange(_SSIM_WINDOW, dtype=torch.float32, device=device) - _SSIM_WINDOW // 2
    profile = torch.exp(-offsets.square() / (2 * _SSIM_SIGMA**2))
    profile = profile / profile.sum()
    return (profile[:, None] * profile[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM [B] of [B,1,H,W] batches in [0,1] over the valid region (as the evaluation's SSIM)."""
    kernel = _gaussian_kernel(x.device)
    stats = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), kernel)
    mx, my, xx, yy, xy = stats.chunk(5)
    vx, vy, cov = xx - mx * mx, yy - my * my, xy - mx * my
    value = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return value.flatten(1).mean(1)


def joint_psnr(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR [B] in dB (data range 1) of ``fused`` against both sources: of the mean of the two
    MSEs, capped at 60 dB."""
    both = ((fused - a).square().flatten(1).mean(1) + (fused - b).square().flatten(1).mean(1)) / 2
    return -10 * both.clamp_min(_MIN_MSE).log10()


def strongest_gradient(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """At each pixel the Sobel (x, y) gradient of whichever source has the larger magnitude there."""
    ax, ay = sobel(a)
    bx, by = sobel(b)
    a_wins = ax.square() + ay.square() >= bx.square() + by.square()
    return torch.where(a_wins, ax, bx), torch.where(a_wins, ay, by)


class FusionLoss(nn.Module):
    """Total loss and its parts for a fused batch and its two sources (all [B,1,H,W] in [0,1])."""

    def __init__(self, psnr_weight: float = 1.0, ssim_weight: float = 1.0, gradient_weight: float = 1.0,
                 intensity_target: str = "average", *, fsim_weight: float = 0.0, qabf_weight: float = 0.0) -> None:
        super().__init__()
        if intensity_target not in INTENSITY_TARGETS:
            raise ValueError(f"intensity target must be one of {INTENSITY_TARGETS}, not {intensity_target!r}")
        self.intensity_target = intensity_target
        self.psnr_weight = psnr_weight
        self.ssim_weight = ssim_weight
        self.gradient_weight = gradient_weight
        self.fsim_weight = fsim_weight
        self.qabf_weight = qabf_weight

    def forward(self, fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        fused, a, b = fused.float(), a.float(), b.float()
        if self.intensity_target == "max":
            brightest = torch.maximum(a, b)
            intensity = joint_psnr(fused, brightest, brightest).mean()
        else:
            intensity = joint_psnr(fused, a, b).mean()
        mean_ssim = ((ssim(fused, a) + ssim(fused, b)) / 2).mean()
        want_x, want_y = strongest_gradient(a, b)
        got_x, got_y = sobel(fused)
        scale = (want_x.abs() + want_y.abs()).mean().clamp_min(1e-4)
        edges = ((got_x - want_x).abs() + (got_y - want_y).abs()).mean() / scale
        total = (self.psnr_weight * -intensity / 10 + self.ssim_weight * (1 - mean_ssim)
                 + self.gradient_weight * edges)
        parts = {"psnr": intensity, "ssim": mean_ssim, "edges": edges}
        if self.fsim_weight:  # phase congruency is the costly part: computed only when weighed
            parts["fsim"] = ((metric_losses.fsim(fused, a) + metric_losses.fsim(fused, b)) / 2).mean()
            total = total + self.fsim_weight * (1 - parts["fsim"])
        if self.qabf_weight:
            parts["qabf"] = metric_losses.qabf(fused, a, b).mean()
            total = total + self.qabf_weight * (1 - parts["qabf"])
        parts = {"total": total, **parts}
        return total, {name: float(value.detach()) for name, value in parts.items()}
