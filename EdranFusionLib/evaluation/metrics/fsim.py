"""FSIM, the feature similarity index (Zhang, Zhang, Mou & Zhang, IEEE TIP 20(8), 2011), on 0..255 data.

FSIM compares two images through two feature maps: phase congruency PC (structure, contrast invariant) and
Scharr gradient magnitude G (contrast):

    S_PC = (2 PC1 PC2 + T1) / (PC1^2 + PC2^2 + T1),   S_G = (2 G1 G2 + T2) / (G1^2 + G2^2 + T2)
    FSIM = sum(S_PC S_G PC_m) / sum(PC_m),            PC_m = max(PC1, PC2)

T1 = 0.85 and T2 = 160 are tuned for 0..255 intensities: on [0, 1] data G is ~255x smaller, S_G is ~1 everywhere
and FSIM is inflated (the pitfall in the paper's numbers). Images larger than 256 px are first averaged and
down-sampled by round(min(H, W) / 256), as the authors do.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ._common import correlate_same, gray, same_shape
from .phase_congruency import phase_congruency

T1 = 0.85
T2 = 160.0
SCHARR_X = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16


class FsimFeatures(NamedTuple):
    """Per-image FSIM features, computed once and reused when one image is compared with several."""

    phase_congruency: np.ndarray
    gradient_magnitude: np.ndarray


def fsim_features(image: np.ndarray) -> FsimFeatures:
    """Phase congruency and Scharr gradient magnitude of an image on the 0..255 scale (RGB: luminance)."""
    array = gray(image)
    factor = max(1, round(min(array.shape) / 256))
    if factor > 1:
        array = ndimage.uniform_filter(array, factor, mode="constant")[::factor, ::factor]
    gx, gy = correlate_same(array, SCHARR_X), correlate_same(array, SCHARR_X.T)
    return FsimFeatures(phase_congruency(array), np.sqrt(gx**2 + gy**2))


def fsim_from_features(first: FsimFeatures, second: FsimFeatures) -> float:
    """FSIM of two images given their :func:`fsim_features`."""
    pc1, pc2 = first.phase_congruency, second.phase_congruency
    g1, g2 = first.gradient_magnitude, second.gradient_magnitude
    similarity = ((2 * pc1 * pc2 + T1) / (pc1**2 + pc2**2 + T1)) * ((2 * g1 * g2 + T2) / (g1**2 + g2**2 + T2))
    weight = np.maximum(pc1, pc2)
    # Two featureless images: every weight is 0; fall back to the unweighted mean (1 when they are equal).
    return float(np.sum(similarity * weight) / np.sum(weight)) if weight.any() else float(similarity.mean())


def fsim(reference: np.ndarray, test: np.ndarray) -> float:
    """FSIM of two images on the 0..255 scale. Range 0..1 (1 for identical images); RGB scored on luminance."""
    same_shape(np.asarray(reference), np.asarray(test))
    return fsim_from_features(fsim_features(reference), fsim_features(test))
