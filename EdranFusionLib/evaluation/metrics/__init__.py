"""Fusion quality metrics on numpy arrays (0..255 scale; colour scored on BT.601 luminance Y).

:func:`fusion_metrics` scores a fused image against its two sources with every metric. Following the paper,
two-source metrics are the mean over the sources, M = (M(A, F) + M(B, F)) / 2, except MI and VIF, which are
reported as sums like the fusion literature does, and Qabf and PSNR_joint, defined on both sources at once.
EN, SD and SF look at the fused image alone. Each metric's definition, range and reference is in its
function's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import gray, same_shape
from .fsim import fsim, fsim_features, fsim_from_features
from .information import fmi, fmi_features, fmi_from_features, mutual_information, sobel_edge_map
from .no_reference import entropy, spatial_frequency, standard_deviation
from .qabf import qabf
from .similarity import joint_psnr, psnr, ssim, vif

__all__ = [
    "METRICS",
    "entropy",
    "fmi",
    "fsim",
    "fusion_metrics",
    "joint_psnr",
    "mutual_information",
    "psnr",
    "qabf",
    "sobel_edge_map",
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "vif",
]


@dataclass(frozen=True)
class MetricInfo:
    """How a metric column reads: what it is, how the two sources are combined, which way is better."""

    description: str
    combination: str
    higher_is_better: bool = True


METRICS: dict[str, MetricInfo] = {
    "PSNR": MetricInfo("peak signal-to-noise ratio, dB, 255 peak", "mean of A, B"),
    "SSIM": MetricInfo("structural similarity, Gaussian 11x11 window", "mean of A, B"),
    "FMI_pixel": MetricInfo("fast feature mutual information, 3x3 windows, intensities", "mean of A, B"),
    "FMI_edge": MetricInfo("fast feature mutual information, 3x3 windows, Sobel edge maps", "mean of A, B"),
    "FSIM": MetricInfo("feature similarity (phase congruency + Scharr gradient), 0..255 data", "mean of A, B"),
    "EN": MetricInfo("entropy of the 8-bit histogram, bits (max 8)", "fused only"),
    "Qabf": MetricInfo("Xydeas-Petrovic edge preservation (ceiling 0.975)", "both sources"),
    "MI": MetricInfo("mutual information of 8-bit levels, bits", "sum of A, B"),
    "VIF": MetricInfo("pixel-domain visual information fidelity, 4 scales", "sum of A, B"),
    "SD": MetricInfo("standard deviation of intensities", "fused only"),
    "SF": MetricInfo("spatial frequency", "fused only"),
    "PSNR_joint": MetricInfo("PSNR of the mean of the two MSEs, dB (copying one source is not inf)", "both sources"),
}


def fusion_metrics(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Every metric of :data:`METRICS` for ``fused`` against sources ``a`` and ``b`` (same height and width).

    Inputs are gray HxW or RGB HxWx3 on the 0..255 scale (any dtype); RGB inputs are scored on their luminance.
    Per-image features (phase congruency, edge maps) are computed once and shared across the two sources.
    """
    f, x, y = gray(fused), gray(a), gray(b)
    same_shape(f, x, y)
    fsim_f, fsim_a, fsim_b = fsim_features(f), fsim_features(x), fsim_features(y)
    values = {
        "PSNR": (psnr(x, f) + psnr(y, f)) / 2,
        "PSNR_joint": joint_psnr(x, y, f),
        "SSIM": (ssim(x, f) + ssim(y, f)) / 2,
    }
    for feature in ("pixel", "edge"):
        feature_f = fmi_features(f, feature)
        per_source = [fmi_from_features(fmi_features(source, feature), feature_f) for source in (x, y)]
        values[f"FMI_{feature}"] = sum(per_source) / 2
    values.update(
        {
            "FSIM": (fsim_from_features(fsim_a, fsim_f) + fsim_from_features(fsim_b, fsim_f)) / 2,
            "EN": entropy(f),
            "Qabf": qabf(f, x, y),
            "MI": mutual_information(x, f) + mutual_information(y, f),
            "VIF": vif(x, f) + vif(y, f),
            "SD": standard_deviation(f),
            "SF": spatial_frequency(f),
        }
    )
    return {name: float(values[name]) for name in METRICS}
