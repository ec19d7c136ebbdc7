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
import numpy as np, torch
from EdranFusionLib.network.model import EHDRAN
from EdranFusionLib.fusion.fuser import fuse_stacks
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
model = EHDRAN().eval()
def status(field):  # bytes; VmHWM is this program's own peak (ru_maxrss would include the parent's at fork)
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(field + ":"))
start = time.perf_counter()
if spec["kind"] == "stroke":
    from pathlib import Path
    import tempfile
    from EdranFusionLib.io import volumes
    from EdranFusionLib import fuse_volumes
    folder = Path(spec["sample_dir"])
    a, b = (volumes.read_volume(folder / n) for n in ("T2.nii.gz", "FLAIR.nii.gz"))
    with tempfile.TemporaryDirectory() as out:
        fused = fuse_volumes(a, b, model=model, batch_size=spec["batch"])
        volumes.write_volume(fused, Path(out) / "f.nii.gz")
    data = 4 * a.GetNumberOfPixels() * 3
else:
    n, h, w = spec["shape"]
    rng = np.random.default_rng(0)
    a, b = np.zeros((n, h, w), np.float32), np.zeros((n, h, w), np.float32)
    for k in range(0, n, spec["every"]):
        a[k], b[k] = rng.random((h, w), dtype=np.float32), rng.random((h, w), dtype=np.float32)
    a += 0.0; b += 0.0  # touch every page, as a loaded volume would
    fused = fuse_stacks(a, b, model, batch_size=spec["batch"])
    fused += 0.0
    data = a.nbytes + b.nbytes + fused.nbytes
print(json.dumps({"peak": status("VmHWM"), "after": status("VmRSS"), "data_bytes": data,
                  "seconds": time.perf_counter() - start}))
"""


def peak_memory(spec: dict) -> dict:
    """Peak resident memory (VmHWM) of one fusion run in a fresh child process, in MiB (Linux only).

    ``working`` is the peak minus what the process holds once the run is over (torch, the model, the inputs and
    the fused result): the memory fusion itself needed, which should follow the batch size and the workers, not
    the number of slices.
    """
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, json.dumps(spec)], capture_output=True, text=True,
                          check=True, env=env)
    child = json.loads(done.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    return {**spec, "peak_rss_mib": child["peak"] / mib, "working_mib": (child["peak"] - child["after"]) / mib,
            "volume_data_mib": child["data_bytes"] / mib, "seconds": child["seconds"]}


def memory_cases(large: bool) -> list[dict]:
    """The stroke volume, then synthetic volumes at two sizes and two batch sizes. In the large ones only every
    fourth slice holds data (the rest is air, skipped as in real scans) to keep the run to minutes: the volume's
    arrays are full size, and the fused slices still pass through the same batches."""
    cases: list[dict] = [{"kind": "stroke", "batch": None, "sample_dir": str(SAMPLE_DIR)}]
    cases += [{"kind": "synthetic", "shape": [n, SIZE, SIZE], "batch": batch, "every": 1}
              for batch in (1, 4) for n in (8, 32)]
    if large:
        cases += [{"kind": "synthetic", "shape": [n, 512, 512], "batch": 1, "every": 4} for n in (100, 400)]
        cases.append({"kind": "synthetic", "shape": [100, 512, 512], "batch": 4, "every": 4})
    return cases


