"""`benchmark` sub-command: speed figures of the installed build on this machine, printed and saved as JSON.

A benchmark, not a test: it measures and reports, it never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .devices import DEVICE_CHOICES, PRECISION_CHOICES
from .fuser import fuse_stacks
from .model import EHDRAN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="where to write the results")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a short run")


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (noise from other processes is common)."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    model = EHDRAN().eval()
    rng = np.random.default_rng(0)
    a, b = (rng.random((1, 256, 256), dtype=np.float32) for _ in range(2))
    seconds = median_seconds(
        lambda: fuse_stacks(a, b, model, device=args.device, precision=args.precision), 2 if args.quick else 5
    )
    results = {"pair_256_seconds": seconds}
    print(f"256x256 pair, model + SFNN ({args.device}, {args.precision}): {seconds * 1000:.0f} ms")
    args.json.write_text(json.dumps(results, indent=2))
    return 0
