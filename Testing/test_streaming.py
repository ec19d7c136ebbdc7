"""Volumes stream through fusion: results equal the former whole-volume path, numpy never holds a volume-sized
copy, batches shrink when memory is short, and what cannot fit at all is refused before it starts."""

from __future__ import annotations

import os
import tracemalloc
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import blob_image, oblique_volume
from test_cli import assert_user_error, cli, outputs_left

from EdranFusionLib import fuse_volumes
from EdranFusionLib.fusion import fuser, intensity
from EdranFusionLib.fusion.color import is_colour, luminance, recolour
from EdranFusionLib.fusion.fuser import fuse_stacks
from EdranFusionLib.io import volumes

OPTIONS = {"device": "cpu", "precision": "fp32", "batch_size": 2}


def _whole_volume_path(a: sitk.Image, b: sitk.Image, model) -> np.ndarray:
    """Fusion as it was before streaming: whole arrays, whole normalised stacks, whole output, restored copy."""
    axis = volumes.axial_axis(a)
    stacks = [volumes.to_axial_stack(sitk.GetArrayFromImage(v), axis) for v in (a, b)]
    grays, windows = [], []
    for stack in stacks:
        gray = luminance(stack).astype(np.float32) if is_colour(stack) else stack
        low, high = np.percentile(gray, [0.5, 99.5])
        window = intensity.EIGHT_BIT if stack.dtype == np.uint8 else intensity.IntensityWindow(float(low), float(high))
        grays.append(window.normalise(gray))
        windows.append(window)
    fused = fuse_stacks(grays[0], grays[1], model, **OPTIONS)
    colour = [s for s in stacks if is_colour(s)]
    if colour:
        return volumes.from_axial_stack(recolour(fused * 255, colour[0]), axis)
    return volumes.from_axial_stack(windows[0].restore(fused), axis)


def _sagittal(array: np.ndarray) -> sitk.Image:
    """Stored sagittally: the slowest index axis runs left-right, so fusion slices along another axis."""
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    image.SetDirection((0, 0, 1, 1, 0, 0, 0, 1, 0))
    return image


CASES = {
    "float oblique": lambda: (oblique_volume(blob_image((9, 20, 24), 0, np.float32)),
                              oblique_volume(blob_image((9, 20, 24), 1, np.int16))),
    "uint8 sagittal": lambda: (_sagittal(blob_image((12, 16, 20), 2)), _sagittal(blob_image((12, 16, 20), 3))),
    "gray + colour": lambda: (oblique_volume(blob_image((6, 16, 16), 4)),
                              oblique_volume(np.stack([blob_image((6, 16, 16), s) for s in (5, 6, 7)], -1))),
    "empty slices": lambda: tuple(oblique_volume(np.pad(blob_image((3, 16, 16), s, np.float32), ((3, 4), (0, 0),
                                                                                           (0, 0)))) for s in (8, 9)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_streamed_result_equals_the_whole_volume_path(model, monkeypatch, case):
    monkeypatch.setattr(intensity, "CHUNK_VOXELS", 700)  # many chunks even for these small volumes
    a, b = CASES[case]()
    expected = _whole_volume_path(a, b, model)
    fused = fuse_volumes(a, b, model=model, **OPTIONS)
    scale = float(np.ptp(expected))  # fp32 network noise is relative to the output range, not to each value
    np.testing.assert_allclose(sitk.GetArrayFromImage(fused), expected, rtol=0, atol=1e-5 * scale + 1e-6)
    assert fused.GetOrigin() == a.GetOrigin() and fused.GetDirection() == a.GetDirection()


def _numpy_peak(model, slices: int) -> int:
    a, b = (oblique_volume(blob_image((slices, 64, 64), s, np.float32)) for s in (10, 11))
    tracemalloc.start()
    try:
        fuse_volumes(a, b, model=model, **OPTIONS)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_numpy_memory_does_not_grow_with_the_volume(model, monkeypatch):
    """Inputs are read through views and the output is written in place: numpy's own allocations during fusion
    (tracemalloc sees them; SimpleITK's and torch's buffers it does not) follow the chunk and batch sizes, so a
    volume four times as deep needs no more."""
    monkeypatch.setattr(intensity, "CHUNK_VOXELS", 2 * 64 * 64)
    monkeypatch.setattr(intensity, "_GATHER_LIMIT", 1000)
    _numpy_peak(model, 2)  # warm up: model folding, caches
    shallow, deep = _numpy_peak(model, 8), _numpy_peak(model, 32)
    assert deep < 1.25 * shallow, (shallow, deep)


def test_a_batch_that_does_not_fit_is_made_smaller(model, monkeypatch):
    a, b = (oblique_volume(blob_image((6, 16, 16), s, np.float32)) for s in (12, 13))
    expected = sitk.GetArrayFromImage(fuse_volumes(a, b, model=model, **OPTIONS))
    one_slice = fuser.working_bytes_per_slice(16, 16)
    monkeypatch.setattr(fuser, "_available_memory_bytes", lambda device: 2 * one_slice)  # room for one slice
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fused = fuse_volumes(a, b, model=model, **{**OPTIONS, "batch_size": 4})
    assert any("fusing 1 slices at a time" in str(w.message) for w in seen)
    np.testing.assert_allclose(sitk.GetArrayFromImage(fused), expected, rtol=0, atol=1e-5 * float(np.ptp(expected)))


def test_a_volume_that_cannot_fit_is_refused_before_reading(workdir, model_path):
    """Headers promising 2 x 120 GB: the raw data files are sparse (no disk used), so the files are complete."""
    for name in ("a", "b"):
        (workdir / f"{name}.nhdr").write_text(
            f"NRRD0004\ntype: float\ndimension: 3\nsizes: 4000 4000 2000\nencoding: raw\nendian: little\n"
            f"data file: {name}.raw\n\n")
        with open(workdir / f"{name}.raw", "wb") as raw:
            raw.truncate(4000 * 4000 * 2000 * 4)
    result = cli("fuse", workdir / "a.nhdr", workdir / "b.nhdr", "-o", workdir / "out" / "f.nrrd",
                 "--model", model_path, "--quiet")
    assert_user_error(result, "MiB of memory are available")
    assert "inputs 244140 MiB" in result.stderr
    assert outputs_left(workdir) == []
    assert os.path.getsize(workdir / "a.raw") == 4000 * 4000 * 2000 * 4
