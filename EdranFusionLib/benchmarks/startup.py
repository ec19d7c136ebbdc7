"""Start-up figures: how long a user waits for the CLI, measured in fresh child processes against
``python -c "import torch"`` on the same machine, in one run.

Targets (issue 11): every ``--help`` and ``models`` faster than importing torch (they never import it), and one
256x256 pair fused end to end (interpreter start, imports, model load, fusion, PNG write) at most 1.0 s more
than importing torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from .speed import SAMPLE_DIR, SIZE, median_seconds

PAIR_TARGET_EXTRA_SECONDS = 1.0


def _library_environment() -> dict[str, str]:
    """The children import this very EdranFusionLib (installed or a source checkout)."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def write_stroke_pair(folder: Path) -> tuple[Path, Path]:
    """The middle axial slices of the bundled stroke T2 and FLAIR, padded to 256x256 PNGs."""
    paths = []
    for name in ("T2", "FLAIR"):
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_DIR / f"{name}.nii.gz"))).astype(np.float64)
        middle = volume[len(volume) // 2]
        canvas = np.zeros((SIZE, SIZE))
        top, left = (SIZE - middle.shape[0]) // 2, (SIZE - middle.shape[1]) // 2
        canvas[top:top + middle.shape[0], left:left + middle.shape[1]] = middle
        path = folder / f"{name}.png"
        Image.fromarray(np.rint(canvas / canvas.max() * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths[0], paths[1]


def startup_timings(commands: Sequence[str], repeats: int) -> dict:
    """Median seconds of each start-up case (``--help`` of each of ``commands``, ``models``, one pair), with its
    ratio to ``import torch``."""
    environment = _library_environment()
    with tempfile.TemporaryDirectory() as folder:
        a, b = write_stroke_pair(Path(folder))
        cli = [sys.executable, "-m", "EdranFusionLib"]
        cases = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
                 "edranfusion --help": [*cli, "--help"],
                 **{f"edranfusion {name} --help": [*cli, name, "--help"] for name in commands},
                 "edranfusion models": [*cli, "models"],
                 "edranfusion fuse (256x256 pair)": [*cli, "fuse", str(a), str(b), "-o",
                                                     str(Path(folder) / "fused.png"), "--quiet"]}
        seconds = {label: median_seconds(lambda command=command: subprocess.run(
            command, env=environment, cwd=folder, check=True, capture_output=True), repeats)
            for label, command in cases.items()}
    torch_seconds = seconds["python -c 'import torch'"]
    return {"import_torch_seconds": torch_seconds, "pair_target_extra_seconds": PAIR_TARGET_EXTRA_SECONDS,
            "cases": [{"case": label, "seconds": value, "ratio_to_import_torch": value / torch_seconds}
                      for label, value in seconds.items()]}
