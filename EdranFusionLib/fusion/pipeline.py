"""Two 2-D images or two volumes in, one fused result out: the one pipeline the CLI, the Slicer module and the
Python API (api.py) all call.

Colour (RGB) inputs are fused on their BT.601 luminance and get their own chroma back. Scalar volumes come
back as float32 in the reference input A's units over A's robust intensity window (see intensity.py);
2-D images and colour results come back as 8-bit. NaN/infinite input voxels are background; each input that has
them gets one :class:`~EdranFusionLib.errors.InputWarning` (Python ``warnings``) saying how many.

Volumes stream: the inputs are read through views of their SimpleITK buffers, each batch of slices is
normalised, fused and written straight into the one preallocated output image, so peak memory is the two
inputs + the output + a working set bounded by the batch size (see docs/INPUTS.md).
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np
import SimpleITK as sitk

from ..choices import DEFAULT_MODEL
from ..errors import EdranFusionError, InputWarning
from ..io import volumes
from ..io.model_files import load_model
from ..io.weights import default_strategy_of, resolve
from ..network.host_memory import available_memory_bytes
from ..network.model import EHDRAN
from .color import is_colour, recolour
from .fuser import Cancel, Progress, fuse_stacks, working_bytes_per_slice
from .intensity import NormalisedStack, ValueSummary, normalised_stack
from .provenance import attach, provenance_of


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


def _normalised_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[NormalisedStack, NormalisedStack]:
    """Both inputs as lazily normalised [N, H, W] gray stacks; one warning per input with non-finite voxels."""
    stacks = []
    for name, pixels in (("A", a), ("B", b)):
        stack, summary = normalised_stack(pixels, f"{what} {name}")
        _warn_non_finite(summary, f"{what} {name}")
        stacks.append(stack)
    return stacks[0], stacks[1]


def _warn_non_finite(summary: ValueSummary, what: str) -> None:
    if summary.non_finite:
        warnings.warn(f"{what}: {summary.non_finite} of {summary.size} voxels are NaN or infinite; "
                      "fused as background (0 after normalisation)", InputWarning, stacklevel=4)


def fuse_images(
    a: np.ndarray,
    b: np.ndarray,
    *,
    model: EHDRAN | str | os.PathLike = DEFAULT_MODEL,
    strategy: str | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> np.ndarray:
    """Fuse two co-registered 2-D images (HxW gray or HxWx3 RGB); returns uint8 HxW, or HxWx3 if either is colour.
    ``strategy`` None: the model's default (:func:`..io.weights.default_strategy_of`)."""
    strategy = strategy or default_strategy_of(model)
    for what, pixels in (("image A", a), ("image B", b)):
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and not is_colour(pixels)):
            raise EdranFusionError(f"{what} has shape {pixels.shape}; give a 2-D gray or RGB image")
    if a.shape[:2] != b.shape[:2]:
        raise EdranFusionError(
            f"images differ in size ({a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}); give co-registered images"
        )
    stack_a, stack_b = _normalised_pair(a[None], b[None], "image")
    fused = fuse_stacks(stack_a, stack_b, as_model(model), strategy=strategy, device=device, precision=precision)
    chroma = _chroma_source(a[None], b[None])
    if chroma is None:
        return np.rint(fused[0] * 255).astype(np.uint8)
    return recolour(fused[0] * 255, chroma[0])


def fuse_volumes(
    a: sitk.Image,
    b: sitk.Image,
    *,
    model: EHDRAN | str | os.PathLike = DEFAULT_MODEL,
    strategy: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    resample: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> sitk.Image:
    """Fuse two volumes slice by slice along the head-foot axis; the result lies exactly on A's grid.

    Scalar inputs give float32 in A's units over A's intensity window; an RGB input gives a uint8 RGB
    vector image. B on a different grid is an error unless ``resample`` (linear, in world space). The result
    carries its provenance record (provenance.py) as metadata, which write_volume keeps. ``strategy`` None: the
    model's default (:func:`..io.weights.default_strategy_of`).
    """
    strategy = strategy or default_strategy_of(model)
    volumes.check_volume(a, "volume A")
    volumes.check_volume(b, "volume B")
    b = volumes.align_to(a, b, resample)
    axis = volumes.axial_axis(a)
    raw_a, raw_b = (volumes.to_axial_stack(sitk.GetArrayViewFromImage(v), axis) for v in (a, b))
    stack_a, stack_b = _normalised_pair(raw_a, raw_b, "volume")
    colour = is_colour(raw_a) or is_colour(raw_b)
    check_memory(0, a.GetNumberOfPixels(), colour, stack_a.shape[1:])
    fused = volumes.blank_like(a, sitk.sitkVectorUInt8 if colour else sitk.sitkFloat32)
    output = volumes.to_axial_stack(volumes.writable_array(fused), axis)

    def store(index: np.ndarray, unit: np.ndarray) -> None:
        if colour:
            output[index] = recolour(unit * 255, _chroma_source(raw_a[index], raw_b[index]))
        else:
            output[index] = stack_a.window.restore(unit)

    fuse_stacks(stack_a, stack_b, as_model(model), strategy=strategy, device=device, precision=precision,
                batch_size=batch_size, progress=progress, cancel=cancel, sink=store)
    return attach(fused, provenance_of(model, strategy, device, precision))


def output_bytes(voxels: int, colour: bool) -> int:
    """Size of a fused volume: float32 scalars, or 8-bit RGB."""
    return voxels * (3 if colour else 4)


def check_memory(input_bytes: int, voxels: int, colour: bool, slice_shape: tuple[int, int]) -> None:
    """Refuse, before anything starts, a fusion that cannot fit: inputs still to be read (``input_bytes``), the
    output, and one slice pair's working set; larger batches are only used when they fit (see fuser.py)."""
    working = working_bytes_per_slice(*slice_shape)
    needed = input_bytes + output_bytes(voxels, colour) + working
    available = available_memory_bytes()
    if needed > available:
        mib = 1024 * 1024
        inputs = f"inputs {input_bytes // mib} MiB, " if input_bytes else ""
        raise EdranFusionError(
            f"fusing these volumes needs about {needed // mib} MiB ({inputs}output "
            f"{output_bytes(voxels, colour) // mib} MiB, {working // mib} MiB to fuse one slice) but only "
            f"{available // mib} MiB of memory are available; free memory, or crop or downsample the volumes"
        )
