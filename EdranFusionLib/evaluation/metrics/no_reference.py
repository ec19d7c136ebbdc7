"""Metrics of the fused image alone: entropy (EN), standard deviation (SD), spatial frequency (SF)."""

from __future__ import annotations

import numpy as np

from ._common import entropy_bits, gray, gray_8bit


def entropy(image: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the image's 256-bin histogram of 8-bit levels. Range 0..8.

    More bits = more distinct, evenly used grey levels. Float images are rounded to the 0..255 levels first, so
    the result never exceeds 8 bits (the paper's 9-13 bits came from one bin per distinct float value).
    """
    counts = np.bincount(gray_8bit(image).ravel(), minlength=256)
    return float(entropy_bits(counts / counts.sum()))


def standard_deviation(image: np.ndarray) -> float:
    """SD: population standard deviation of the intensities (0..255 scale); a proxy for contrast. Range 0..127.5."""
    return float(np.std(gray(image)))


def spatial_frequency(image: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) (Eskicioglu & Fisher 1995), 0..255 scale; overall activity level of the image.

    RF^2 and CF^2 are the mean squared differences between horizontally and vertically adjacent pixels (means
    over the H*(W-1) and (H-1)*W available differences). A constant image gives 0; a one-pixel 0/255
    checkerboard gives 255*sqrt(2).
    """
    array = gray(image)
    row_frequency_sq = np.mean(np.diff(array, axis=1) ** 2) if array.shape[1] > 1 else 0.0
    column_frequency_sq = np.mean(np.diff(array, axis=0) ** 2) if array.shape[0] > 1 else 0.0
    return float(np.sqrt(row_frequency_sq + column_frequency_sq))
