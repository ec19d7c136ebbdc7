"""Peak resident memory of fusion runs, each measured in a fresh child process (Linux: VmHWM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .speed import SAMPLE_DIR, SIZE

_MEMORY_CHILD = """
import json, sys, time
import numpy as np, SimpleITK as sitk, torch
from EdranFusionLib.network.model import EHDRAN
from EdranFusionLib import fuse_volumes
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
model = EHDRAN().eval()
def status(field):  # bytes; VmHWM is this program's own peak (ru_maxrss would include the parent's at fork)
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))
if spec["kind"] == "stroke":
    from pathlib import Path
    import tempfile
    from EdranFusionLib.io import volumes
    folder = Path(spec["sample_dir"])
    base = status("VmRSS")
    start = time.perf_counter()
    a, b = (volumes.read_volume(folder / n) for n in ("T2.nii.gz", "FLAIR.nii.gz"))
    with tempfile.TemporaryDirectory() as out:
        fused = fuse_volumes(a, b, model=model, batch_size=spec["batch"])
        volumes.write_volume(fused, Path(out) / "f.nii.gz")
else:
    n, h, w = spec["shape"]
    rng = np.random.default_rng(0)
    a, b = (sitk.Image([w, h, n], sitk.sitkFloat32) for _ in range(2))
    base = status("VmRSS")  # before the inputs exist: torch, the model, the interpreter
    for image in (a, b):  # every slice filled (no empty slices for the fuser to skip), chunk by chunk in place
        from EdranFusionLib.io.volumes import writable_array
        values = writable_array(image)
        for k in range(n):
            values[k] = rng.random((h, w), dtype=np.float32)
    start = time.perf_counter()
    fused = fuse_volumes(a, b, model=model, batch_size=spec["batch"])
inputs = 4 * (a.GetNumberOfPixels() + b.GetNumberOfPixels()) if spec["kind"] != "stroke" else (
    a.GetNumberOfPixels() * a.GetSizeOfPixelComponent() + b.GetNumberOfPixels() * b.GetSizeOfPixelComponent())
output = fused.GetNumberOfPixels() * fused.GetSizeOfPixelComponent() * fused.GetNumberOfComponentsPerPixel()
print(json.dumps({"peak": status("VmHWM"), "base": base, "inputs": inputs, "output": output,
                  "seconds": time.perf_counter() - start}))
"""


def peak_memory(spec: dict) -> dict:
    """Peak resident memory (VmHWM) of one ``fuse_volumes`` run in a fresh child process, in MiB (Linux only).

    ``working`` is the peak minus the process before the volumes existed (torch, the model), the two inputs and
    the output: the memory fusion itself needed, which should follow the batch size and the workers, not the
    number of slices.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, json.dumps(spec)], capture_output=True, text=True,
                          check=True, env=env)
    child = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    working = child["peak"] - child["base"] - child["inputs"] - child["output"]
    return {**spec, "peak_rss_mib": child["peak"] / mib, "base_rss_mib": child["base"] / mib,
            "inputs_mib": child["inputs"] / mib, "output_mib": child["output"] / mib, "working_mib": working / mib,
            "seconds": child["seconds"]}


def memory_cases(large: bool) -> list[dict]:
    """The stroke volume, then synthetic volumes with every slice filled at two sizes and two batch sizes; with
    ``large``, fully filled 512x512x100 and 512x512x400 pairs (tens of minutes on a CPU)."""
    cases: list[dict] = [{"kind": "stroke", "batch": None, "sample_dir": str(SAMPLE_DIR)}]
    cases += [{"kind": "synthetic", "shape": [n, SIZE, SIZE], "batch": batch} for batch in (1, 4) for n in (8, 32)]
    if large:
        cases += [{"kind": "synthetic", "shape": [n, 512, 512], "batch": None} for n in (100, 400)]
    return cases
