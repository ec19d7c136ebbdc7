"""Intensity normalisation to the network's [0,1] input range and back.

- 8-bit data (PNG/JPEG, uint8 volumes): x / 255, as the paper does; the output maps back with * 255.
- Anything else (CT in Hounsfield units, uint16/float MR, PET): the robust window [p0.5, p99.5] of the whole
  image or volume is mapped to [0,1] and values outside it are clipped. Percentiles over the whole volume
  (not per slice) keep slices comparable. The fused output maps back onto the reference input's window, so
  a fused volume is in the reference input's units over that window.
- NaN and infinite voxels (SPM, FSL and PET pipelines write NaN outside the brain) are background: they are
  left out of the window and become 0 after normalisation. :func:`value_summary` counts them so the pipeline
  can warn once; an input with no finite value, or only one value, is an error.

Volumes are examined and normalised a chunk of slices at a time (:class:`NormalisedStack`), so nothing here
holds a second full-size copy of a volume: the percentiles are exact order statistics found with histogram
passes over the chunks (:func:`finite_percentiles`), equal to ``np.percentile`` of the finite values.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import EdranFusionError
from .color import is_colour, luminance

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
CHUNK_VOXELS = 1 << 20  # voxels examined at once: ~4 MiB of float32, ~30 MiB of temporaries at most
_BINS = 4096
_GATHER_LIMIT = 1 << 20  # order statistics are picked exactly once a histogram bin holds at most this many


@dataclass(frozen=True)
class IntensityWindow:
    """The [low, high] range mapped to [0,1]."""

    low: float
    high: float

    def normalise(self, data: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(data, dtype=np.float32) - self.low) / (self.high - self.low)
        np.nan_to_num(scaled, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # non-finite voxels are background
        return np.clip(scaled, 0.0, 1.0, out=scaled)

    def restore(self, unit: np.ndarray) -> np.ndarray:
        return (np.asarray(unit, dtype=np.float32) * (self.high - self.low) + self.low).astype(np.float32)


EIGHT_BIT = IntensityWindow(0.0, 255.0)


@dataclass(frozen=True)
class ValueSummary:
    """What one pass over an input found: its finite range and how many voxels were NaN or infinite."""

    low: float
    high: float
    non_finite: int
    size: int


def chunks(data: np.ndarray, voxels: int | None = None) -> Iterator[np.ndarray]:
    """Consecutive blocks of whole slices (first axis) of about ``voxels`` values each; views, not copies."""
    step = max(1, (voxels or CHUNK_VOXELS) // max(1, int(np.prod(data.shape[1:]))))
    for start in range(0, len(data), step):
        yield data[start : start + step]


def gray_chunks(pixels: np.ndarray) -> Iterator[np.ndarray]:
    """Chunks of gray values: the data themselves, or float32 BT.601 luminance of 8-bit RGB."""
    for chunk in chunks(pixels):
        yield luminance(chunk).astype(np.float32) if is_colour(pixels) else chunk


def value_summary(pixels: np.ndarray, what: str) -> ValueSummary:
    """Finite min/max and the non-finite count of ``pixels`` (gray or RGB); an error if nothing is left to fuse."""
    if pixels.size == 0:
        raise EdranFusionError(f"{what} is empty; give an image with pixels in it")
    low, high, non_finite = np.inf, -np.inf, 0
    floating = np.issubdtype(pixels.dtype, np.floating)
    for chunk in gray_chunks(pixels):
        values = chunk
        if floating:
            finite = np.isfinite(chunk)
            non_finite += int(finite.size - np.count_nonzero(finite))
            values = chunk[finite]
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if not np.isfinite(low):
        raise EdranFusionError(f"{what} has no finite value (every voxel is NaN or infinite); check the input")
    if low == high:
        only = "only background besides NaN/infinite voxels" if non_finite else "constant"
        raise EdranFusionError(f"{what} is {only} (every value is {low:g}); check that the right image was chosen")
    return ValueSummary(low, high, non_finite, int(pixels.size // (3 if is_colour(pixels) else 1)))


def window_for(data: np.ndarray, what: str, summary: ValueSummary | None = None) -> IntensityWindow:
    """The window that maps ``data`` to [0,1]: /255 for uint8, robust percentiles of the finite values otherwise."""
    summary = summary or value_summary(data, what)
    if data.dtype == np.uint8:
        return EIGHT_BIT
    low, high = finite_percentiles(data, (LOW_PERCENTILE, HIGH_PERCENTILE), summary)
    if high <= low:  # mostly one value with a few outliers: fall back to the full range
        low, high = summary.low, summary.high
    return IntensityWindow(float(low), float(high))


def luminance_window(pixels: np.ndarray, what: str) -> tuple[np.ndarray, IntensityWindow]:
    """Gray values (BT.601 luminance for 8-bit RGB) and the window that maps them to [0,1] (2-D images)."""
    if not is_colour(pixels):
        return pixels, window_for(pixels, what)
    _check_colour(pixels, what)
    gray = luminance(pixels).astype(np.float32)
    value_summary(gray, what)
    return gray, EIGHT_BIT


def _check_colour(pixels: np.ndarray, what: str) -> None:
    if pixels.dtype != np.uint8:
        raise EdranFusionError(f"{what} is colour but not 8-bit; give 8-bit RGB colour data")


def finite_percentiles(data: np.ndarray, percents: tuple[float, ...], summary: ValueSummary) -> list[float]:
    """``np.percentile`` (linear) of the finite values of ``data``, without copying ``data`` when it is large.

    Each order statistic is narrowed with histogram passes over chunks of slices until its bin holds few
    enough values to gather and pick exactly, or only one repeated value.
    """
    if data.size <= CHUNK_VOXELS:
        return [float(p) for p in np.percentile(_finite(data), percents)]
    count = summary.size - summary.non_finite
    results = []
    for percent in percents:
        position = (count - 1) * percent / 100.0
        below = int(np.floor(position))
        low_value = order_statistic(data, below, summary)
        high_value = order_statistic(data, min(below + 1, count - 1), summary)
        results.append(float(low_value + (position - below) * (high_value - low_value)))
    return results


def _finite(chunk: np.ndarray) -> np.ndarray:
    """The finite values of ``chunk`` as float64 (so every comparison below is made in one precision)."""
    values = chunk[np.isfinite(chunk)] if np.issubdtype(chunk.dtype, np.floating) else chunk.ravel()
    return values.astype(np.float64)


def _in_range(values: np.ndarray, low: float, high: float, closed: bool) -> np.ndarray:
    """Values in [low, high) (``closed``: [low, high]), as ``np.histogram`` assigns them to a bin."""
    return values[(values >= low) & ((values <= high) if closed else (values < high))]


def order_statistic(data: np.ndarray, rank: int, summary: ValueSummary) -> float:
    """The ``rank``-th smallest finite value (0-based) of ``data``, in passes over chunks of slices."""
    low, high = summary.low, summary.high
    while low < high:
        edges = np.linspace(low, high, _BINS + 1)  # the edges np.histogram's uniform bins compare against
        counts = sum(np.histogram(values, bins=_BINS, range=(low, high))[0] for values in map(_finite, chunks(data)))
        cumulative = np.cumsum(counts)
        index = int(np.searchsorted(cumulative, rank, side="right"))
        rank -= int(cumulative[index - 1]) if index else 0
        in_bin = functools.partial(_in_range, low=edges[index], high=edges[index + 1], closed=index == _BINS - 1)
        if counts[index] <= _GATHER_LIMIT:
            picked = np.concatenate([in_bin(values) for values in map(_finite, chunks(data))])
            return float(np.partition(picked, rank)[rank])
        ranges = [(v.min(), v.max()) for v in map(in_bin, map(_finite, chunks(data))) if v.size]
        low, high = float(min(r[0] for r in ranges)), float(max(r[1] for r in ranges))
    return float(low)


@dataclass
class NormalisedStack:
    """A [N, H, W(, 3)] stack seen as [0,1] float32 gray slices, normalised per batch when indexed.

    The fuser takes batches of it as it would of an array, so a volume is never normalised as a whole copy.
    """

    data: np.ndarray
    window: IntensityWindow

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])

    @property
    def ndim(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        batch = self.data[index]
        return self.window.normalise(luminance(batch) if is_colour(self.data) else batch)

    def nonzero_slices(self) -> np.ndarray:
        """Boolean per slice: does it hold any voxel above the window's floor (anything to fuse)?"""
        step = max(1, CHUNK_VOXELS // max(1, int(np.prod(self.data.shape[1:]))))
        found = [self[start : start + step].reshape(-1, int(np.prod(self.shape[1:]))).any(axis=1)
                 for start in range(0, len(self), step)]
        return np.concatenate(found)


def normalised_stack(pixels: np.ndarray, what: str) -> tuple[NormalisedStack, ValueSummary]:
    """A lazily normalised stack of ``pixels`` (gray or 8-bit RGB) and what the pass over it found."""
    if is_colour(pixels):
        _check_colour(pixels, what)
    summary = value_summary(pixels, what)
    window = EIGHT_BIT if is_colour(pixels) else window_for(pixels, what, summary)
    return NormalisedStack(pixels, window), summary
