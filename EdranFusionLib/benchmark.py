"""`benchmark` sub-command: speed and memory figures of the installed build on this machine, as a table and JSON.

A benchmark, not a test: it measures and reports, it never asserts timings. Shared machines are noisy, so every
figure is the median of repeats, and comparisons are best read as ratios within one run (the JSON keeps the
machine's load average next to the figures).

Sections: conv throughput of the machine per precision; model FLOPs per 256x256 pair; ms per pair for each
precision and memory format (with the share of the conv throughput the model reaches); SFNN per pair by SVD and
by Gram eigenvalues; end to end (read, fuse, write) on the bundled stroke T2 + FLAIR volume; peak resident
memory of fusion runs measured in child processes, for several volume and batch sizes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import volumes
from .api import fuse_volumes
from .devices import (
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    cpu_has_fast_bf16,
    resolve_device,
    resolve_precision,
    single_threaded_ops,
    worker_pool,
)
from .fuser import fuse_stacks, plan_fusion
from .model import EHDRAN, fold_for_inference
from .strategies import fuse_latents, nuclear_norms, nuclear_norms_svd

SIZE = 256
SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data" / "stroke"
_PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
_CPU = torch.device("cpu")
_FORMATS = {"channels-last": torch.channels_last, "nchw": torch.contiguous_format}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="one precision to measure (default: every precision this device runs well)")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="results file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no memory section: about a minute")
    parser.add_argument("--compile", action="store_true",
                        help="also time the model under torch.compile (needs a C++ compiler; slow to compile)")
    parser.add_argument("--large", action="store_true",
                        help="also peak memory for synthetic 512x512x100 and 512x512x400 volumes (takes many minutes)")


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


def _precisions(requested: str, device: torch.device) -> list[torch.dtype]:
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
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
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
        return {"variant": variant, "precision": _PRECISION_NAMES[dtype], "format": format_name,
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
    row = {"variant": "inference + torch.compile", "precision": _PRECISION_NAMES[dtype], "format": "channels-last",
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
    return {"variant": "fuse_stacks default", "precision": _PRECISION_NAMES[plan.dtype], "format": "channels-last",
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


_MEMORY_CHILD = """
import json, sys, time
import numpy as np, torch
from EdranFusionLib.model import EHDRAN
from EdranFusionLib.fuser import fuse_stacks
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
    from EdranFusionLib import volumes
    from EdranFusionLib.api import fuse_volumes
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
    root = str(Path(__file__).resolve().parents[1])
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


def machine_facts(device: torch.device) -> dict:
    facts = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
             "torch_threads": torch.get_num_threads(), "cpu_fast_bf16": cpu_has_fast_bf16(),
             "device": str(device), "load_average_1min": os.getloadavg()[0]}
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def print_report(results: dict) -> None:
    facts = results["machine"]
    print(f"EdranFusion benchmark: torch {facts['torch']}, {facts['cpu_count']} CPUs, device {facts['device']}, "
          f"load average {facts['load_average_1min']:.1f} (figures are medians; compare ratios within this run)")
    print("\nconv throughput (3x3, 64->64, 4x256x256, channels-last, run as the fuser's workers)")
    for name, gflops in results["conv_gflops"].items():
        print(f"  {name:5s} {gflops:8.1f} GFLOP/s")
    flops = results["model_flops_per_pair"]
    print(f"\nmodel FLOPs per 256x256 pair (2 encodes + 1 decode): {flops['reference'] / 1e9:.1f} GFLOP as trained, "
          f"{flops['inference_form'] / 1e9:.1f} GFLOP in the inference form")
    print("\n256x256 pair, model + SFNN-max")
    reference = results["pairs"][0]["seconds_per_pair"]
    for row in results["pairs"]:
        share = f"{row['conv_share'] * 100:5.1f}% of conv peak" if "conv_share" in row else ""
        compiled = f"  (compile {row['compile_seconds']:.0f} s)" if "compile_seconds" in row else ""
        print(f"  {row['variant']:26s} {row['precision']:5s} {row['format']:13s} workers {row['workers']}  "
              f"{_ms(row['seconds_per_pair'])}  {1 / row['seconds_per_pair']:5.2f} pairs/s  "
              f"CPU {_ms(row['cpu_seconds_per_pair'])}  "
              f"x{reference / row['seconds_per_pair']:4.1f}  {share}{compiled}")
    print("\nSFNN nuclear norms per 256x256 pair (2 x 64 maps, float32)")
    for row in results["sfnn"]:
        print(f"  {row['method']:28s} {row['setting']:26s} {_ms(row['seconds_per_pair'])}  "
              f"CPU {_ms(row['cpu_seconds_per_pair'])}  max rel. error {row['max_relative_error']:.1e}")
    for error in results.get("compile_errors", []):
        print(f"  torch.compile failed: {error}")
    stroke = results["stroke_end_to_end"]
    print(f"\nstroke T2 + FLAIR {'x'.join(map(str, stroke['shape']))}: read {stroke['read']:.2f} s, "
          f"fuse {stroke['fuse']:.2f} s, write {stroke['write']:.2f} s, total {stroke['total']:.2f} s "
          f"({stroke['cpu']:.1f} CPU s)")
    if results.get("memory"):
        print("\npeak resident memory of one fusion run (child process)")
        for row in results["memory"]:
            what = ("stroke volume, read+fuse+write" if row["kind"] == "stroke"
                    else "x".join(map(str, row["shape"])) + f", data in 1/{row['every']} slices")
            print(f"  {what:32s} batch {row['batch'] or 'auto'}  peak {row['peak_rss_mib']:7.0f} MiB  "
                  f"working {row['working_mib']:6.0f} MiB  volume data {row['volume_data_mib']:6.0f} MiB  "
                  f"{row['seconds']:6.1f} s")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    repeats = 3 if args.quick else 7
    plan = plan_fusion((SIZE, SIZE), device=args.device, precision=args.precision)
    precisions = _precisions(args.precision, device)
    torch.manual_seed(0)
    base = EHDRAN().eval()
    results: dict = {"command": " ".join(["python -m EdranFusionLib benchmark", *sys.argv[2:]]),
                     "machine": machine_facts(device)}
    results["conv_gflops"] = {_PRECISION_NAMES[d]: conv_throughput(device, d, plan.workers, repeats)
                              for d in precisions}
    flops = {"reference": model_flops(base), "inference_form": model_flops(fold_for_inference(base))}
    results["model_flops_per_pair"] = flops
    rows = pair_timings(base, device, precisions, plan.workers, repeats)
    if args.compile:
        compiled = [compiled_timing(base, device, dtype, plan.workers, repeats) for dtype in precisions]
        rows += [row for row in compiled if "error" not in row]
        results["compile_errors"] = [row["error"] for row in compiled if "error" in row]
    rows.append(fuser_timing(base, args.device, args.precision, max(2, repeats // 2)))
    for row in rows[1:]:
        peak = results["conv_gflops"][row["precision"]]
        executed = flops["reference"] if row["variant"] == "as trained" else flops["inference_form"]
        row["conv_share"] = executed / row["seconds_per_pair"] / 1e9 / peak
    results["pairs"] = rows
    results["sfnn"] = sfnn_timings(plan.workers, repeats)
    results["stroke_end_to_end"] = stroke_end_to_end(base, args.device, args.precision, 1 if args.quick else 3)
    if not args.quick or args.large:
        results["memory"] = [peak_memory(case) for case in memory_cases(args.large)]
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    print_report(results)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0
