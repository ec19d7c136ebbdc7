"""Montage pictures of fusion results, so a person can look at what the numbers describe.

One band per pair: the sources A and B, then one fused image per method, each titled; under it the same columns
zoomed on the region richest in source edges (outlined on A), where fusion methods differ most.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..fusion.color import gray_levels, is_colour
from ..io.atomic import atomic_output

_TITLE_HEIGHT = 18
_GAP = 4
_BACKGROUND = (255, 255, 255)
_OUTLINE = (255, 200, 0)


@dataclass(frozen=True)
class MontageRow:
    """One pair: its name and the (title, uint8 gray or RGB image) columns, sources first."""

    name: str
    columns: Sequence[tuple[str, np.ndarray]]


def zoom_box(a: np.ndarray, b: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
    """(top, left, side) of the square, ``fraction`` of the smaller image side, holding most source edge energy."""
    gray = gray_levels(a) + gray_levels(b)
    energy = np.hypot(ndimage.sobel(gray, axis=0), ndimage.sobel(gray, axis=1))
    side = max(8, int(min(gray.shape) * fraction))
    totals = ndimage.uniform_filter(energy, side, mode="constant")
    half = side // 2
    # Only centres whose square lies wholly inside the image.
    inner = totals[half : gray.shape[0] - side + half + 1, half : gray.shape[1] - side + half + 1]
    top, left = np.unravel_index(np.argmax(inner), inner.shape)
    return int(top), int(left), side


def _as_rgb(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image if is_colour(image) else np.stack([image] * 3, axis=-1)).convert("RGB")


def _tile(image: np.ndarray, width: int) -> Image.Image:
    height = max(1, round(width * image.shape[0] / image.shape[1]))
    return _as_rgb(image).resize((width, height), Image.Resampling.LANCZOS)


def _zoom(image: np.ndarray, box: tuple[int, int, int], size: int) -> Image.Image:
    top, left, side = box
    return _as_rgb(image[top : top + side, left : left + side]).resize((size, size), Image.Resampling.NEAREST)


def build_montage(rows: Sequence[MontageRow], tile: int = 160) -> Image.Image:
    """The montage as a PIL image: per row a titled band of full views and a band of zoomed crops."""
    if not rows:
        raise ValueError("a montage needs at least one row")
    n_columns = max(len(row.columns) for row in rows)
    heights = [_TITLE_HEIGHT + round(tile * row.columns[0][1].shape[0] / row.columns[0][1].shape[1])
               + _GAP + tile + 2 * _GAP for row in rows]
    canvas = Image.new("RGB", (n_columns * (tile + _GAP) + _GAP, sum(heights) + _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    y = _GAP
    for row, height in zip(rows, heights):
        (_, a), (_, b) = row.columns[0], row.columns[1]
        box = zoom_box(a, b)
        full_height = height - _TITLE_HEIGHT - tile - 3 * _GAP
        for c, (title, image) in enumerate(row.columns):
            x = _GAP + c * (tile + _GAP)
            draw.text((x + 2, y + 2), f"{row.name}: {title}" if c == 0 else title, fill=(0, 0, 0), font=font)
            canvas.paste(_tile(image, tile), (x, y + _TITLE_HEIGHT))
            canvas.paste(_zoom(image, box, tile), (x, y + _TITLE_HEIGHT + full_height + _GAP))
        top, left, side = box
        sy, sx = full_height / a.shape[0], tile / a.shape[1]
        outline = (_GAP + left * sx, y + _TITLE_HEIGHT + top * sy,
                   _GAP + (left + side) * sx, y + _TITLE_HEIGHT + (top + side) * sy)
        draw.rectangle(outline, outline=_OUTLINE)
        y += height
    return canvas


def write_montage(rows: Sequence[MontageRow], path: str | os.PathLike, tile: int = 160,
                  max_bytes: int = 500_000) -> None:
    """Write the montage as an optimised PNG, atomically; above ``max_bytes`` as a 256-colour PNG instead."""
    picture = build_montage(rows, tile)
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", optimize=True)
    if encoded.tell() > max_bytes:
        encoded = io.BytesIO()
        palette = picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        palette.save(encoded, format="PNG", optimize=True)
    with atomic_output(path) as temporary:
        temporary.write_bytes(encoded.getvalue())
