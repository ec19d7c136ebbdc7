"""Differentiable FSIM and Qabf for the stage-2 fusion loss (beyond the paper), in torch.

The learned head trained on PSNR, SSIM and a gradient term alone gave up FSIM (phase-congruency structure) for
edge strength: FSIM fell from 0.81 to 0.79 on held-out training series while Qabf rose. FSIM and Qabf are not
locally approximated by any simpler term, so these are the metrics themselves, written in torch from the same
constants, filter bank and noise estimate as the evaluation's numpy versions (evaluation/metrics), which stay the
float64 references every reported number comes from; Testing/test_metric_losses.py checks the two agree. A
head trained with them is partly scored on its own objective, and its card says so.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as F

from ..evaluation.metrics.fsim import SCHARR_X, T1, T2
from ..evaluation.metrics.phase_congruency import EPSILON, PC2_NOISE_RESCALE, bank_and_noise_gains
from ..evaluation.metrics.qabf import GAMMA_A, GAMMA_G, KAPPA_A, KAPPA_G, SIGMA_A, SIGMA_G, SOBEL_X

_NOISE_K = 2.0  # FSIM's noise threshold: mean + k standard deviations of the Rayleigh noise energy
_TINY = 1e-12  # keeps square roots differentiable at 0


def _kernels(kernel_x, like: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(kernel_x, dtype=like.dtype, device=like.device)
    return torch.stack([x, x.T])[:, None]


@functools.lru_cache(maxsize=8)
def _bank(shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(x, dtype=torch.float32, device=device) for x in bank_and_noise_gains(shape))


def phase_congruency(image: torch.Tensor) -> torch.Tensor:
    """Kovesi's phase congruency [B, 1, H, W] of images [B, 1, H, W] on the 0..255 scale (FSIM's settings)."""
    bank, gains = _bank(tuple(image.shape[-2:]), image.device)
    spectrum = torch.fft.fft2(image[:, 0].float())
    responses = torch.fft.ifft2(spectrum[:, None, None] * bank)  # [B, orientations, scales, H, W]
    even, odd = responses.real, responses.imag
    sum_even, sum_odd = even.sum(2), odd.sum(2)
    norm = (sum_even.square() + sum_odd.square() + _TINY).sqrt() + EPSILON
    mean_even, mean_odd = (sum_even / norm)[:, :, None], (sum_odd / norm)[:, :, None]
    energy = (even * mean_even + odd * mean_odd - (even * mean_odd - odd * mean_even).abs()).sum(2)
    amplitude = (even.square() + odd.square() + _TINY).sqrt()
    noise_power = -amplitude[:, :, 0].square().flatten(2).median(2).values / math.log(0.5)
    tau = (noise_power * gains / 2).sqrt()
    rayleigh = tau * math.sqrt(math.pi / 2) + _NOISE_K * (tau.square() * (2 - math.pi / 2)).sqrt()
    threshold = rayleigh / PC2_NOISE_RESCALE
    total_amplitude = amplitude.sum((1, 2))
    return (torch.relu(energy - threshold[..., None, None]).sum(1) / total_amplitude.clamp_min(_TINY))[:, None]


def _scharr_magnitude(image: torch.Tensor) -> torch.Tensor:
    gradient = F.conv2d(image, _kernels(SCHARR_X, image), padding=1)
    return (gradient.square().sum(1, keepdim=True) + _TINY).sqrt()


def fsim(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per-image FSIM [B] of [B, 1, H, W] batches in [0, 1] (scored on 0..255, as the evaluation does; no
    down-sampling, which the evaluation applies only above 256 px)."""
    x, y = first.float() * 255, second.float() * 255
    pc_x, pc_y = phase_congruency(x), phase_congruency(y)
    g_x, g_y = _scharr_magnitude(x), _scharr_magnitude(y)
    similarity = ((2 * pc_x * pc_y + T1) / (pc_x.square() + pc_y.square() + T1)
                  * (2 * g_x * g_y + T2) / (g_x.square() + g_y.square() + T2))
    weight = torch.maximum(pc_x, pc_y)
    return (similarity * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(_TINY)


def _edges(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel strength and orientation atan(gy / gx) (zero padding, as the evaluation's Qabf)."""
    gradient = F.conv2d(image, _kernels(SOBEL_X, image), padding=1)
    gx, gy = gradient[:, :1], gradient[:, 1:]
    safe_gx = torch.where(gx.abs() < 1e-6, torch.full_like(gx, 1e-6), gx)  # the reference's pi/2 at gx = 0
    return (gx.square() + gy.square() + _TINY).sqrt(), torch.atan(gy / safe_gx)


def qabf(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Qabf [B] of ``fused`` for sources ``a``, ``b`` ([B, 1, H, W] in [0, 1], scored on 0..255)."""
    (g_f, o_f), (g_a, o_a), (g_b, o_b) = (_edges(x.float() * 255) for x in (fused, a, b))

    def preserved(g_s: torch.Tensor, o_s: torch.Tensor) -> torch.Tensor:
        ratio = torch.minimum(g_s, g_f) / torch.maximum(g_s, g_f).clamp_min(1e-6)
        agreement = 1 - (o_s - o_f).abs() / (math.pi / 2)
        return (GAMMA_G / (1 + torch.exp(KAPPA_G * (ratio - SIGMA_G)))
                * GAMMA_A / (1 + torch.exp(KAPPA_A * (agreement - SIGMA_A))))

    kept = preserved(g_a, o_a) * g_a + preserved(g_b, o_b) * g_b
    return kept.flatten(1).sum(1) / (g_a + g_b).flatten(1).sum(1).clamp_min(1e-6)
