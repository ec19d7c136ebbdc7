"""Intensity normalisation to the network's [0,1] input range and back.

- 8-bit data (PNG/JPEG, uint8 volumes): x / 255, as the paper does; the output maps back with * 255.
- Anything else (CT in Hounsfield units, uint16/float MR, PET): the robust window [p0.5, p99.5] of the whole
  image or volume is mapped to [0,1] and values outside it are clipped. Percentiles over the whole volume
  (not per slice) keep slices comparable. The fused output maps back onto the reference input's window, so
  a fused volume is in the reference input's units over that window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EdranFusionError
from .color import is_colour, luminance

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5


@dataclass(frozen=True)
class IntensityWindow:
    """The [low, high] range mapped to [0,1]."""

    low: float
    high: float

    def normalise(self, data: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(data, dtype=np.float32) - self.low) / (self.high - self.low)
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def restore(self, unit: np.ndarray) -> np.ndarray:
        return (np.asarray(unit, dtype=np.float32) * (self.high - self.low) + self.low).astype(np.float32)


EIGHT_BIT = IntensityWindow(0.0, 255.0)


def check_values(data: np.ndarray, what: str) -> None:
    """Reject non-finite and constant inputs with a message naming the input."""
    if data.size == 0:
        raise EdranFusionError(f"{what} is empty; give an image with pixels in it")
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise EdranFusionError(f"{what} contains NaN or infinite values; clean or mask them before fusing")
    if data.min() == data.max():
        raise EdranFusionError(
            f"{what} is constant (every value is {data.min():g}); check that the right image was chosen"
        )


def window_for(data: np.ndarray, what: str) -> IntensityWindow:
    """The window that maps ``data`` to [0,1]: /255 for uint8, robust percentiles otherwise."""
    check_values(data, what)
    if data.dtype == np.uint8:
        return EIGHT_BIT
    low, high = np.percentile(data, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:  # mostly one value with a few outliers: fall back to the full range
        low, high = float(data.min()), float(data.max())
    return IntensityWindow(float(low), float(high))


def luminance_window(pixels: np.ndarray, what: str) -> tuple[np.ndarray, IntensityWindow]:
    """Gray values (BT.601 luminance for 8-bit RGB) and the window that maps them to [0,1]."""
    if not is_colour(pixels):
        return pixels, window_for(pixels, what)
    if pixels.dtype != np.uint8:
        raise EdranFusionError(f"{what} is colour but not 8-bit; give 8-bit RGB colour data")
    gray = luminance(pixels).astype(np.float32)
    check_values(gray, what)
    return gray, EIGHT_BIT
