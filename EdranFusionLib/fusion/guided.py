"""Network-guided pyramid fusion (beyond the paper): the encoder decides where each source leads, the result is
made of the sources' own pixels.

The latents of a rule are decoded, and the decoder loses detail (CT slices reconstruct at 38-44 dB). Here the
network only weighs: each source's activity is the window mean of its latent magnitude (mean |f| over channels)
times its window-mean intensity, and W_a = act_a^P / (act_a^P + act_b^P). The sources are split into Laplacian
pyramids; W blends the coarsest level (intensity), and at every finer level the source coefficient of larger
magnitude is kept (edges), so the fused image keeps each source's edges at full contrast; with a detail window
above 1 the source of larger window-mean coefficient energy is kept instead, so two sources of similar texture do
not alternate pixel by pixel (a mottled look). Window, P, levels and the detail window were chosen on training
series (evaluation/study.py tune, docs/RESULTS.md).

The pixel-domain control is the same rule with the images as their own 1-channel latents (act = window mean
of the intensity, squared): what the network's features add over the intensities alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .spatial import activity_weights, window_mean

# Chosen on training series only (evaluation/study.py tune; docs/RESULTS.md), never on validation.
GUIDED_WINDOW = 31
GUIDED_POWER = 1.0
GUIDED_LEVELS = 3
GUIDED_DETAIL_WINDOW = 5


def _down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2, ceil_mode=True)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """``levels`` detail bands (finest first) and the coarse residual; :func:`collapse` inverts it exactly."""
    bands = []
    for _ in range(levels):
        coarse = _down(x)
        bands.append(x - _up(coarse, x))
        x = coarse
    return [*bands, x]


def collapse(pyramid: list[torch.Tensor]) -> torch.Tensor:
    x = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        x = band + _up(x, band)
    return x


def guided_weights(fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor, *,
                   window: int = GUIDED_WINDOW, power: float = GUIDED_POWER) -> torch.Tensor:
    """W_a [B, 1, H, W] in float32 from the latents' local magnitude times the sources' local intensity."""
    activity = [window_mean(f.float().abs().mean(dim=1, keepdim=True), window) * window_mean(y.float(), window)
                for f, y in ((fa, ya), (fb, yb))]
    return activity_weights(*activity, power)


def pyramid_blend(ya: torch.Tensor, yb: torch.Tensor, weight_a: torch.Tensor, levels: int = GUIDED_LEVELS,
                  detail_window: int = GUIDED_DETAIL_WINDOW) -> torch.Tensor:
    """The coarse level blended by ``weight_a``; at each finer level the source coefficient of larger magnitude
    (``detail_window`` 1) or of larger window-mean energy."""
    bands_a, bands_b = laplacian_pyramid(ya.float(), levels), laplacian_pyramid(yb.float(), levels)
    base = weight_a * ya.float() + (1 - weight_a) * yb.float()
    for _ in range(levels):  # the blend's coarse residual: its pyramid's detail bands are not needed
        base = _down(base)
    details = [torch.where(window_mean(a * a, detail_window) >= window_mean(b * b, detail_window), a, b)
               for a, b in zip(bands_a[:-1], bands_b[:-1])]
    return collapse([*details, base])


def fuse_guided(fa: torch.Tensor, fb: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The fused image [B, 1, H, W] (float32, unclamped) of sources ``ya``, ``yb`` guided by their latents,
    with the module's settings (read at call time, so the study's tuning grid can set them)."""
    return pyramid_blend(ya, yb, guided_weights(fa, fb, ya, yb, window=GUIDED_WINDOW, power=GUIDED_POWER),
                         GUIDED_LEVELS, GUIDED_DETAIL_WINDOW)
