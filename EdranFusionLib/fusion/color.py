"""RGB <-> YCbCr (ITU-R BT.601, full range as in JPEG/PIL) for fusing colour SPECT/PET on luminance.

The network sees only Y; the colour image's own Cb/Cr are put back on the fused Y, so hue comes from the
functional image and structure from both.
"""

from __future__ import annotations

import numpy as np

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
_YCBCR_TO_RGB = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]], dtype=np.float64)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] RGB on the 0..255 scale -> float64 [..., 3] YCbCr on the 0..255 scale."""
    return np.asarray(rgb, dtype=np.float64) @ _RGB_TO_YCBCR.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`; returns float64 RGB, not clipped."""
    return (np.asarray(ycbcr, dtype=np.float64) - _CHROMA_OFFSET) @ _YCBCR_TO_RGB.T


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Y of BT.601 (0..255 scale) of an [..., 3] RGB array."""
    return np.asarray(rgb, dtype=np.float64) @ _RGB_TO_YCBCR[0]


def gray_levels(pixels: np.ndarray) -> np.ndarray:
    """Float64 gray values: the BT.601 luminance of RGB data, the values themselves otherwise."""
    return luminance(pixels) if is_colour(pixels) else np.asarray(pixels, dtype=np.float64)


def is_colour(array: np.ndarray) -> bool:
    """True for arrays whose last axis holds three colour components."""
    return array.ndim >= 3 and array.shape[-1] == 3


def recolour(fused_y: np.ndarray, colour_source: np.ndarray) -> np.ndarray:
    """Put the colour source's Cb/Cr on the fused luminance; returns uint8 RGB."""
    ycbcr = rgb_to_ycbcr(colour_source)
    ycbcr[..., 0] = np.clip(fused_y, 0.0, 255.0)
    return np.clip(np.rint(ycbcr_to_rgb(ycbcr)), 0, 255).astype(np.uint8)
