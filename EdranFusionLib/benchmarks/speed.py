"""Speed figures: conv throughput per precision, model FLOPs, ms per 256x256 pair per precision and memory
format, SFNN by SVD and by Gram eigenvalues, and read + fuse + write of the bundled stroke volume.

Shared machines are noisy, so every figure is the median of repeats; compare ratios within one run.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..fusion.fuser import fuse_stacks, plan_fusion
from ..fusion.pipeline import fuse_volumes
from ..fusion.rules import fuse_latents
from ..fusion.sfnn import nuclear_norms, nuclear_norms_svd
from ..io import volumes
from ..network.devices import (
    cpu_has_fast_bf16,
    resolve_precision,
    single_threaded_ops,
    worker_pool,
)
from ..network.model import EHDRAN, fold_for_inference

SIZE = 256
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data" / "stroke"
PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_CPU = torch.device("cpu")
_FORMATS = {"channels-last": torch.channels_last, "nchw": torch.contiguous_format}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(work: Callable[[], object], repeats: int, device: torch.device = _CPU) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call (noise from other processes is common)."""
    work()
    _synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        _synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def wall_and_cpu_seconds(work: Callable[[], object], repeats: int, device: torch.device = _CPU) -> tuple[float, float]:
    """Median wall seconds of a call (see :func:`median_seconds`) and the process CPU seconds per call, averaged
    over all calls. On a busy machine CPU seconds / cores estimates the wall time on an idle one."""
    cpu = time.process_time()
    wall = median_seconds(work, repeats, device)
    return wall, (time.process_time() - cpu) / (repeats + 1)


def _in_workers(work: Callable[[], object], workers: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """Wall and CPU seconds per call of ``work`` when each of ``workers`` threads calls it once per round, as the
    fuser runs slices."""
    with worker_pool(workers) as pool:
        wall, cpu = wall_and_cpu_seconds(lambda: list(pool.map(lambda _: work(), range(workers))), repeats, device)
    return wall / workers, cpu / workers


def precisions_for(requested: str, device: torch.device) -> list[torch.dtype]:
    if requested != "auto":
        return [resolve_precision(requested, device)]
    if device.type == "cpu":
        return [torch.float32, torch.bfloat16] if cpu_has_fast_bf16() else [torch.float32]
    return [torch.float32, torch.float16]


def conv_throughput(device: torch.device, dtype: torch.dtype, workers: int, repeats: int) -> float:
    """GFLOP/s of a large channels-last 3x3 conv (64 -> 64 channels, 4 x 256 x 256) run by ``workers`` workers."""
    x = torch.rand(4, 64, SIZE, SIZE, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    weight = torch.rand(64, 64, 3, 3, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * x.numel() * 64 * 9

    @torch.inference_mode()
    def conv() -> None:
        F.conv2d(x, weight, padding=1)

    return flops / _in_workers(conv, workers, repeats, device)[0] / 1e9


def model_flops(model: torch.nn.Module) -> int:
    """FLOPs of one 256x256 pair through ``model``: two encodes and one decode (the fusion rule excluded)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():  # inference_mode hides ops from it in torch 2.4
        model.decode(model.encode(torch.rand(2, 1, SIZE, SIZE))[:1])
    return int(counter.get_total_flops())


def _pair_step(model: torch.nn.Module, device: torch.device, dtype: torch.dtype, memory_format: torch.memory_format,
               seed: int = 0) -> Callable[[], object]:
    """One 256x256 pair: encode both, SFNN-max, decode (what the fuser runs per slice, without its I/O)."""
    pair = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    pair = pair.to(device, dtype).contiguous(memory_format=memory_format)

    @torch.inference_mode()
    def step() -> torch.Tensor:
        latent_a, latent_b = model.encode(pair).chunk(2)
        return model.decode(fuse_latents(latent_a, latent_b))

    return step


def pair_timings(base: EHDRAN, device: torch.device, precisions: list[torch.dtype], workers: int,
                 repeats: int) -> list[dict]:
    """ms per 256x256 pair (model + SFNN-max): the straightforward reference first (fp32, NCHW, one pair at a
    time on torch's threads), then the model as trained in each precision and memory format run by the
    fuser's workers, then the inference form (:class:`InferenceEHDRAN`, channels-last) per precision."""
    def row(variant: str, dtype: torch.dtype, format_name: str, row_workers: int, seconds: tuple[float, float]) -> dict:
        return {"variant": variant, "precision": PRECISION_NAMES[dtype], "format": format_name,
                "workers": row_workers, "seconds_per_pair": seconds[0], "cpu_seconds_per_pair": seconds[1]}

    plain = base.to(device).eval()
    step = _pair_step(plain, device, torch.float32, torch.contiguous_format)
    rows = [row("reference, torch threads", torch.float32, "nchw", 1, wall_and_cpu_seconds(step, repeats, device))]
    for dtype in precisions:
        for format_name, memory_format in _FORMATS.items():
            model = copy.deepcopy(base).to(device, dtype, memory_format=memory_format)
            step = _pair_step(model, device, dtype, memory_format)
            rows.append(row("as trained", dtype, format_name, workers, _in_workers(step, workers, repeats, device)))
    for dtype in precisions:
        fast = fold_for_inference(base).to(device, dtype, memory_format=torch.channels_last)
        step = _pair_step(fast, device, dtype, torch.channels_last)
        rows.append(row("inference form", dtype, "channels-last", workers, _in_workers(step, workers, repeats, device)))
    return rows


def compiled_timing(base: EHDRAN, device: torch.device, dtype: torch.dtype, workers: int, repeats: int) -> dict:
    """The inference form under ``torch.compile`` (inductor): compile seconds and ms per pair, or why it failed.

    Not the fuser's default: on a CPU the compile time is only won back after many hundreds of slices.
    """
    row = {"variant": "inference + torch.compile", "precision": PRECISION_NAMES[dtype], "format": "channels-last",
           "workers": workers}
    fast = fold_for_inference(base).to(device, dtype, memory_format=torch.channels_last)
    fast.encode = torch.compile(fast.encode, dynamic=False)
    fast.decode = torch.compile(fast.decode, dynamic=False)
    step = _pair_step(fast, device, dtype, torch.channels_last)
    try:
        start = time.perf_counter()
        step()
        row["compile_seconds"] = time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - no compiler, unsupported platform: report, do not fail
        return {**row, "error": f"{type(error).__name__}: {error}".splitlines()[0]}
    row["seconds_per_pair"], row["cpu_seconds_per_pair"] = _in_workers(step, workers, repeats, device)
    return row


def fuser_timing(base: EHDRAN, device: str, precision: str, repeats: int) -> dict:
    """ms per 256x256 pair through :func:`fuse_stacks` with its default (automatic) settings."""
    plan = plan_fusion((SIZE, SIZE), device=device, precision=precision)
    count = 2 * plan.workers * plan.batch_size
    rng = np.random.default_rng(0)
    a, b = (rng.random((count, SIZE, SIZE), dtype=np.float32) for _ in range(2))
    wall, cpu = wall_and_cpu_seconds(lambda: fuse_stacks(a, b, base, device=device, precision=precision), repeats,
                                     plan.device)
    return {"variant": "fuse_stacks default", "precision": PRECISION_NAMES[plan.dtype], "format": "channels-last",
            "workers": plan.workers, "batch_size": plan.batch_size, "seconds_per_pair": wall / count,
            "cpu_seconds_per_pair": cpu / count}


def _authors_svd_loop(maps: torch.Tensor) -> torch.Tensor:
    """The authors' way: one SVD per channel and image, in a Python loop."""
    return torch.stack([torch.stack([torch.linalg.svdvals(m).sum() for m in image]) for image in maps])


def sfnn_timings(workers: int, repeats: int) -> list[dict]:
    """Nuclear norms of one 256x256 pair's 2 x 64 softmax maps (CPU, float32) per method, with the error relative
    to a float64 SVD: one thread; the library also on torch's threads (one pair, batch split over workers) and as
    throughput per pair when the fuser's workers each run a pair."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.softmax(3 * torch.randn(2, 64, SIZE, SIZE, generator=generator), dim=1)
    exact = torch.linalg.svdvals(maps.double()).sum(-1)
    rows = []
    methods = {"svd per channel (authors)": _authors_svd_loop, "svd batched": nuclear_norms_svd,
               "gram eigenvalues (library)": nuclear_norms}
    for name, method in methods.items():
        error = float(((method(maps).double() - exact).abs() / exact).max())
        with single_threaded_ops():
            wall, cpu = wall_and_cpu_seconds(lambda method=method: method(maps), max(1, repeats // 2))
        rows.append({"method": name, "setting": "one thread", "seconds_per_pair": wall, "cpu_seconds_per_pair": cpu,
                     "max_relative_error": error})
    wall, cpu = wall_and_cpu_seconds(lambda: nuclear_norms(maps), repeats)
    rows.append({**rows[-1], "setting": f"{torch.get_num_threads()} torch threads", "seconds_per_pair": wall,
                 "cpu_seconds_per_pair": cpu})
    wall, cpu = _in_workers(lambda: nuclear_norms(maps), workers, repeats, _CPU)
    rows.append({**rows[-1], "setting": f"{workers} workers, throughput", "seconds_per_pair": wall,
                 "cpu_seconds_per_pair": cpu})
    return rows


def stroke_end_to_end(base: EHDRAN, device: str, precision: str, repeats: int) -> dict:
    """Seconds to read the bundled stroke T2 + FLAIR, fuse them and write the result (NIfTI, gzip), and the CPU
    seconds the process used for it (on a busy machine wall time exceeds CPU time / cores)."""
    timings: dict[str, list[float]] = {"read": [], "fuse": [], "write": [], "cpu": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            cpu, start = time.process_time(), time.perf_counter()
            a, b = (volumes.read_volume(SAMPLE_DIR / name) for name in ("T2.nii.gz", "FLAIR.nii.gz"))
            read = time.perf_counter()
            fused = fuse_volumes(a, b, model=base, device=device, precision=precision)
            fuse = time.perf_counter()
            volumes.write_volume(fused, Path(folder) / "fused.nii.gz")
            timings["read"].append(read - start)
            timings["fuse"].append(fuse - read)
            timings["write"].append(time.perf_counter() - fuse)
            timings["cpu"].append(time.process_time() - cpu)
    result = {step: statistics.median(values) for step, values in timings.items()}
    result["total"] = result["read"] + result["fuse"] + result["write"]
    result["shape"] = list(a.GetSize())
    return result


def machine_facts(device: torch.device) -> dict:
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
             "torch_threads": torch.get_num_threads(), "cpu_fast_bf16": cpu_has_fast_bf16(),
             "device": str(device), "load_average_1min": os.getloadavg()[0]}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


