"""Input conventions shared by every metric: 2-D float64 on the 0..255 scale, colour scored on luminance."""

from __future__ import annotations

import numpy as np
from scipy import ndimage, special

from ...fusion.color import gray_levels

DATA_RANGE = 255.0


def gray(image: np.ndarray) -> np.ndarray:
    """2-D float64 on the 0..255 scale; RGB becomes its BT.601 luminance Y."""
    array = gray_levels(np.asarray(image))
    if array.ndim != 2:
        raise ValueError(f"metrics need a 2-D gray or HxWx3 RGB image, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def gray_8bit(image: np.ndarray) -> np.ndarray:
    """Integer levels 0..255 (uint8) for histogram metrics; float input is rounded and must be on 0..255."""
    array = gray(image)
    if array.min() < -0.5 or array.max() > 255.5:
        raise ValueError("histogram metrics need values on the 0..255 scale; rescale [0, 1] images by 255")
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def same_shape(*images: np.ndarray) -> None:
    """Metrics compare pixel by pixel: refuse images of different sizes."""
    shapes = {image.shape[:2] for image in images}
    if len(shapes) != 1:
        raise ValueError(f"images must have the same height and width, got {sorted(shapes)}")


def correlate_same(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(kernel, image, 'same')``: correlation with zero padding outside the image."""
    return ndimage.correlate(image, kernel, mode="constant", cval=0.0)


def entropy_bits(probabilities: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Shannon entropy in bits of probability arrays along ``axis`` (0 log 0 = 0; pass no negative entries)."""
    return special.entr(np.asarray(probabilities, dtype=np.float64)).sum(axis=axis) / np.log(2)
