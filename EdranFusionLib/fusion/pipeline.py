"""Two 2-D images or two volumes in, one fused result out: the one pipeline the CLI, the Slicer module and the
Python API (api.py) all call.

Colour (RGB) inputs are fused on their BT.601 luminance and get their own chroma back. Scalar volumes come
back as float32 in the reference input A's units over A's robust intensity window (see intensity.py);
2-D images and colour results come back as 8-bit.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import SimpleITK as sitk

from ..choices import DEFAULT_MODEL, DEFAULT_STRATEGY
from ..errors import EdranFusionError
from ..io import volumes
from ..io.model_files import load_model
from ..io.weights import resolve
from ..network.model import EHDRAN
from .color import is_colour, recolour
from .fuser import Cancel, Progress, fuse_stacks
from .intensity import IntensityWindow, luminance_window


@functools.lru_cache(maxsize=4)
def _cached_model(name_or_path: str, path: str, size: int, mtime_ns: int) -> EHDRAN:
    """Keyed by the weights file's path, size and mtime too, so a file rewritten on disk is loaded again."""
    return load_model(name_or_path)


def as_model(model: EHDRAN | str | os.PathLike) -> EHDRAN:
    """A model instance from an instance, a bundled name or a weights path (loaded once per file version)."""
    if isinstance(model, EHDRAN):
        return model
    path, _sha256 = resolve(model)
    stat = path.stat()
    return _cached_model(str(model), str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _chroma_source(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """The colour input whose Cb/Cr the result takes; both colour: their mean."""
    colours = [x for x in (a, b) if is_colour(x)]
    if not colours:
        return None
    return colours[0] if len(colours) == 1 else (colours[0].astype(np.float64) + colours[1]) / 2


def _fuse_luminance(
    a: np.ndarray, b: np.ndarray, model: EHDRAN | str | os.PathLike, options: dict
) -> tuple[np.ndarray, IntensityWindow, np.ndarray | None]:
    """Fuse [N, H, W(, 3)] stacks on luminance; returns fused [0,1] stack, A's window, chroma source."""
    gray_a, window_a = luminance_window(a, "input A")
    gray_b, window_b = luminance_window(b, "input B")
    fused = fuse_stacks(window_a.normalise(gray_a), window_b.normalise(gray_b), as_model(model), **options)
    return fused, window_a, _chroma_source(a, b)


def fuse_images(
    a: np.ndarray,
    b: np.ndarray,
    *,
    model: EHDRAN | str | os.PathLike = DEFAULT_MODEL,
    strategy: str = DEFAULT_STRATEGY,
    device: str = "auto",
    precision: str = "auto",
) -> np.ndarray:
    """Fuse two co-registered 2-D images (HxW gray or HxWx3 RGB); returns uint8 HxW, or HxWx3 if either is colour."""
    for what, pixels in (("image A", a), ("image B", b)):
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and not is_colour(pixels)):
            raise EdranFusionError(f"{what} has shape {pixels.shape}; give a 2-D gray or RGB image")
    if a.shape[:2] != b.shape[:2]:
        raise EdranFusionError(
            f"images differ in size ({a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}); give co-registered images"
        )
    options = {"strategy": strategy, "device": device, "precision": precision}
    fused, _window, chroma = _fuse_luminance(a[None], b[None], model, options)
    if chroma is None:
        return np.rint(fused[0] * 255).astype(np.uint8)
    return recolour(fused[0] * 255, chroma[0])


def fuse_volumes(
    a: sitk.Image,
    b: sitk.Image,
    *,
    model: EHDRAN | str | os.PathLike = DEFAULT_MODEL,
    strategy: str = DEFAULT_STRATEGY,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    resample: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> sitk.Image:
    """Fuse two volumes slice by slice along the head-foot axis; the result lies exactly on A's grid.

    Scalar inputs give float32 in A's units over A's intensity window; an RGB input gives a uint8 RGB
    vector image. B on a different grid is an error unless ``resample`` (linear, in world space).
    """
    volumes.check_volume(a, "volume A")
    volumes.check_volume(b, "volume B")
    b = volumes.align_to(a, b, resample)
    axis = volumes.axial_axis(a)
    stacks = [volumes.to_axial_stack(sitk.GetArrayFromImage(v), axis) for v in (a, b)]
    options = {"strategy": strategy, "device": device, "precision": precision, "batch_size": batch_size,
               "progress": progress, "cancel": cancel}
    fused, window_a, chroma = _fuse_luminance(stacks[0], stacks[1], model, options)
    if chroma is None:
        return volumes.image_like(volumes.from_axial_stack(window_a.restore(fused), axis), a)
    colour = recolour(fused * 255, chroma)
    return volumes.image_like(volumes.from_axial_stack(colour, axis), a, is_vector=True)
