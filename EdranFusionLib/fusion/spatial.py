"""Spatial fusion rules (beyond the paper): weights that vary over the image, not one number per image.

The paper's SFNN (sfnn.py, Eq. 2) reduces the weight maps to one scalar per image, so it is a global blend of
the two latents. These rules keep the weights per pixel (or per element), as the paper's text ("the
contribution of each pixel") reads:

- ``spatial-sfnn``: the channel softmax of each latent, as in SFNN, but its activity measured locally: the
  largest window-mean softmax map over channels at every pixel (phi = max, per window instead of per image).
- ``activity-p<P>``: the tempered activity family W_a = |f_a|^P / (|f_a|^P + |f_b|^P), element-wise.
  P = 0 is the average, P = 1 the L1 rule (``fl1n``), P = 2 the energy ratio (``fer``); larger P tends to max.
- ``two-scale``: each tensor split into a smooth base (window mean) and a detail band; the bases are averaged
  (intensity), the details weighted by their smoothed energy.

Every rule takes two [B, C, H, W] tensors and returns one of the same shape, device and dtype, with weights in
float32. The same functions run on pixels ([B, 1, H, W] images): that is the control showing what the network
adds. With one channel the channel softmax is constant, so ``spatial-sfnn`` on pixels is the pixel average.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..errors import EdranFusionError

# Chosen on training series only (evaluation/study.py tune; docs/RESULTS.md), never on validation.
SPATIAL_SFNN_WINDOW = 7
TWO_SCALE_BASE_WINDOW = 31
TWO_SCALE_ENERGY_WINDOW = 7
_ACTIVITY_NAME = re.compile(r"activity-p(\d+(?:\.\d+)?)")
MAX_ACTIVITY_POWER = 8.0


def window_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a ``window`` x ``window`` neighbourhood (odd window; edges average only the pixels inside)."""
    if window < 1 or window % 2 == 0:
        raise EdranFusionError(f"fusion window must be an odd number of pixels, got {window}")
    if window == 1:
        return x
    return F.avg_pool2d(x, window, stride=1, padding=window // 2, count_include_pad=False)


def _blend(weight_a: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    return (weight_a * fa.float() + (1 - weight_a) * fb.float()).to(fa.dtype)


def _ratio(activity_a: torch.Tensor, activity_b: torch.Tensor) -> torch.Tensor:
    """activity_a / (activity_a + activity_b), 1/2 where both are zero."""
    total = activity_a + activity_b
    return torch.where(total > 0, activity_a / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def activity_weights(fa: torch.Tensor, fb: torch.Tensor, power: float) -> torch.Tensor:
    """W_a = |f_a|^p / (|f_a|^p + |f_b|^p) element-wise in float32 (p = 0: one half everywhere)."""
    if not 0 <= power <= MAX_ACTIVITY_POWER:
        raise EdranFusionError(f"activity power must be between 0 and {MAX_ACTIVITY_POWER:g}, got {power:g}")
    if power == 0:
        return torch.full(fa.shape, 0.5, dtype=torch.float32, device=fa.device)
    a, b = fa.float().abs(), fb.float().abs()
    # Divide by the larger magnitude first so |f|^p neither overflows nor underflows for large p.
    scale = torch.maximum(a, b).clamp_min(torch.finfo(torch.float32).tiny)
    return _ratio((a / scale).pow(power), (b / scale).pow(power))


def fuse_activity(fa: torch.Tensor, fb: torch.Tensor, power: float) -> torch.Tensor:
    """The tempered activity rule with exponent ``power``."""
    return _blend(activity_weights(fa, fb, power), fa, fb)


def spatial_sfnn_weights(fa: torch.Tensor, fb: torch.Tensor, window: int = SPATIAL_SFNN_WINDOW) -> torch.Tensor:
    """Per-pixel W_a [B, 1, H, W]: max over channels of the window-mean channel-softmax map, normalised."""
    activity = [window_mean(torch.softmax(f, dim=1, dtype=torch.float32), window).amax(dim=1, keepdim=True)
                for f in (fa, fb)]
    return _ratio(*activity)


def fuse_spatial_sfnn(fa: torch.Tensor, fb: torch.Tensor, window: int = SPATIAL_SFNN_WINDOW) -> torch.Tensor:
    return _blend(spatial_sfnn_weights(fa, fb, window), fa, fb)


def fuse_two_scale(fa: torch.Tensor, fb: torch.Tensor, base_window: int = TWO_SCALE_BASE_WINDOW,
                   energy_window: int = TWO_SCALE_ENERGY_WINDOW) -> torch.Tensor:
    """Average of the smooth bases plus the details weighted by their window-mean energy."""
    a, b = fa.float(), fb.float()
    base_a, base_b = window_mean(a, base_window), window_mean(b, base_window)
    detail_a, detail_b = a - base_a, b - base_b
    weight_a = _ratio(window_mean(detail_a.square(), energy_window), window_mean(detail_b.square(), energy_window))
    fused = (base_a + base_b) / 2 + weight_a * detail_a + (1 - weight_a) * detail_b
    return fused.to(fa.dtype)


def activity_power(strategy: str) -> float | None:
    """P of an ``activity-p<P>`` strategy name, None for other names."""
    match = _ACTIVITY_NAME.fullmatch(strategy)
    return float(match.group(1)) if match else None


def fuse_spatial(fa: torch.Tensor, fb: torch.Tensor, strategy: str) -> torch.Tensor | None:
    """Fuse with a spatial rule by name; None when ``strategy`` is not one of them."""
    if strategy == "spatial-sfnn":
        return fuse_spatial_sfnn(fa, fb, SPATIAL_SFNN_WINDOW)
    if strategy == "two-scale":
        return fuse_two_scale(fa, fb, TWO_SCALE_BASE_WINDOW, TWO_SCALE_ENERGY_WINDOW)
    power = activity_power(strategy)
    return None if power is None else fuse_activity(fa, fb, power)
