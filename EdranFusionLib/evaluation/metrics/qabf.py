"""Qabf (Q^{AB/F}), Xydeas & Petrovic's gradient-based fusion metric (Electronics Letters 36(4), 2000).

How much of the sources' edge information (Sobel strength g and orientation alpha) the fused image keeps:

    Q^{AF} = Q_g^{AF} Q_alpha^{AF},  with sigmoids of the strength ratio G = min(gA, gF) / max(gA, gF)
    and of the orientation agreement A = 1 - |alphaA - alphaF| / (pi/2);
    Qabf = sum(Q^{AF} gA + Q^{BF} gB) / sum(gA + gB)   (edge strength as weight, L = 1).

Range 0..1 in principle; with the published sigmoid constants a perfect fusion (F == A == B) scores
Gamma_g / (1 + e^{-7.5}) * Gamma_alpha / (1 + e^{-4.4}) ~= 0.9748, the metric's ceiling.
Orientation is alpha = atan(gy / gx) in [-pi/2, pi/2] and Sobel filtering uses zero padding ('same'), as in the
reference implementation most fusion papers use, so the numbers are comparable with theirs.
"""

from __future__ import annotations

import numpy as np

from ._common import correlate_same, gray, same_shape

GAMMA_G, KAPPA_G, SIGMA_G = 0.9994, -15.0, 0.5
GAMMA_A, KAPPA_A, SIGMA_A = 0.9879, -22.0, 0.8
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel edge strength and orientation (atan(gy/gx), pi/2 where gx = 0)."""
    gx, gy = correlate_same(image, SOBEL_X), correlate_same(image, SOBEL_X.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        orientation = np.where(gx == 0, np.pi / 2, np.arctan(gy / gx))
    return np.hypot(gx, gy), orientation


def _preservation(source: tuple[np.ndarray, np.ndarray], fused: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Q^{SF}: per-pixel edge preservation of one source in the fused image."""
    (g_s, a_s), (g_f, a_f) = source, fused
    larger = np.maximum(g_s, g_f)
    ratio = np.divide(np.minimum(g_s, g_f), larger, out=np.zeros_like(larger), where=larger > 0)
    agreement = 1 - np.abs(a_s - a_f) / (np.pi / 2)
    q_strength = GAMMA_G / (1 + np.exp(KAPPA_G * (ratio - SIGMA_G)))
    q_orientation = GAMMA_A / (1 + np.exp(KAPPA_A * (agreement - SIGMA_A)))
    return q_strength * q_orientation


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf of ``fused`` for sources ``a`` and ``b`` (0..255 scale; RGB scored on luminance). 0 if A, B are flat."""
    f, x, y = gray(fused), gray(a), gray(b)
    same_shape(f, x, y)
    edges_f, edges_a, edges_b = _edges(f), _edges(x), _edges(y)
    weight_a, weight_b = edges_a[0], edges_b[0]
    total = float(np.sum(weight_a + weight_b))
    if total == 0:
        return 0.0
    kept = _preservation(edges_a, edges_f) * weight_a + _preservation(edges_b, edges_f) * weight_b
    return float(np.sum(kept) / total)
