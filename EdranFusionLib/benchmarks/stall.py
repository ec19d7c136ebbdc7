"""Longest stall of the calling thread while a volume fuses on a worker thread: what Slicer's panel feels.

The panel copies the voxels, fuses on a worker thread (fusion/background.py) and polls it from a Qt timer.
Threads share Python's GIL: torch's operators release it, but the Python code between them, the model load,
resampling and a few C calls that keep the GIL can delay the timer. Here the calling thread ticks every
millisecond, as a busy GUI would, and the longest gap between two ticks is the stall (target: under 0.1 s).
The first fusion of a session also imports torch on the worker; that run is measured in a fresh child process.
Torch-free at import, so the child starts as Slicer does, without torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ..fusion.background import BackgroundRun

TICK_SECONDS = 0.001
SLICES = 64


def _volumes(slices: int, size: int):
    import numpy as np
    import SimpleITK as sitk

    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in (slices, size, size)), indexing="ij")
    images = []
    for shift in (0.0, 0.3):
        array = (1000 * np.clip(1.1 - (k**2 + (j - shift) ** 2 + i**2), 0, None)).astype(np.float32)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.9, 0.9, 2.0))
        images.append(image)
    return images


def measure_stall(slices: int = SLICES, size: int = 64, model: str = "general", batch_size: int | None = None,
                  device: str = "cpu") -> dict:
    """Fuse a synthetic ``slices`` x ``size`` x ``size`` pair on a worker while this thread ticks."""
    torch_loaded = "torch" in sys.modules
    a, b = _volumes(slices, size)

    def work(progress, cancel):
        from ..fusion.pipeline import fuse_volumes  # imports torch on the worker, as the panel does

        return fuse_volumes(a, b, model=model, device=device, batch_size=batch_size, progress=progress,
                            cancel=cancel)

    start = last = time.perf_counter()
    longest = 0.0
    ticks = 0
    run = BackgroundRun(work)
    while not run.done:
        time.sleep(TICK_SECONDS)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last, ticks = now, ticks + 1
    run.result()
    return {"shape": [slices, size, size], "torch_loaded_before": torch_loaded, "seconds": time.perf_counter() - start,
            "ticks": ticks, "longest_stall_seconds": longest}


def stall_figures(slices: int = SLICES, size: int = 64) -> list[dict]:
    """A first fusion (fresh process: torch imported on the worker) and a fusion with torch already loaded."""
    code = ("import json, sys; from EdranFusionLib.benchmarks.stall import measure_stall; "
            f"print(json.dumps(measure_stall({slices}, {size})))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800)
    return [json.loads(child.stdout.strip().splitlines()[-1]), measure_stall(slices, size)]
