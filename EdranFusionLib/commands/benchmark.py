"""`benchmark` sub-command: speed and memory figures of the installed build on this machine, as a table and JSON.

A benchmark, not a test: it measures and reports, it never asserts timings. Shared machines are noisy, so every
figure is the median of repeats, and comparisons are best read as ratios within one run (the JSON keeps the
machine's load average next to the figures).

Sections: conv throughput of the machine per precision; model FLOPs per 256x256 pair; ms per pair for each
precision and memory format (with the share of the conv throughput the model reaches); SFNN per pair by SVD and
by Gram eigenvalues; end to end (read, fuse, write) on the bundled stroke T2 + FLAIR volume; peak resident
memory of fusion runs measured in child processes, for several volume and batch sizes; start-up of the CLI
(every ``--help``, ``models``, one pair end to end) against ``import torch``, in child processes.

torch and the measurements are imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..choices import DEVICE_CHOICES, PRECISION_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES,
                        help="one precision to measure (default: every precision this device runs well)")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="results file (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and no memory section: about a minute")
    parser.add_argument("--strategies", action="store_true",
                        help="also time every fusion strategy per 256x256 pair (benchmarks/strategies.py)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the model under torch.compile (needs a C++ compiler; slow to compile)")
    parser.add_argument("--large", action="store_true",
                        help="also peak memory for fully filled 512x512x100 and 512x512x400 pairs (tens of minutes)")
    parser.add_argument("--web", action="store_true",
                        help="also the web server load check: 4 clients x 2 jobs on 127.0.0.1 (needs the web extra)")



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
    for row in results.get("stall", []):
        when = "later fusions (torch loaded)" if row["torch_loaded_before"] else "first fusion (imports torch)"
        print(f"\nGUI-thread stall while {'x'.join(map(str, row['shape']))} fuses on a worker, {when}: longest "
              f"{row['longest_stall_seconds']:.3f} s (target < 0.1 s) over {row['seconds']:.1f} s")
    if results.get("memory"):
        print("\npeak resident memory of one fusion run (child process)")
        for row in results["memory"]:
            what = ("stroke volume, read+fuse+write" if row["kind"] == "stroke"
                    else "x".join(map(str, row["shape"])) + ", every slice filled")
            print(f"  {what:32s} batch {row['batch'] or 'auto'}  peak {row['peak_rss_mib']:7.0f} MiB = "
                  f"base {row['base_rss_mib']:5.0f} + inputs {row['inputs_mib']:6.0f} + output "
                  f"{row['output_mib']:6.0f} + working {row['working_mib']:6.0f} MiB  {row['seconds']:6.1f} s")


def print_startup(startup: dict) -> None:
    print("\nstart-up in a fresh process (median; ratio to `python -c 'import torch'`)")
    for row in startup["cases"]:
        print(f"  {row['case']:36s} {_ms(row['seconds'])}  x{row['ratio_to_import_torch']:4.2f}")
    pair = startup["cases"][-1]["seconds"] - startup["import_torch_seconds"]
    print(f"  one 256x256 pair end to end: {pair:+.2f} s beside importing torch "
          f"(target at most +{startup['pair_target_extra_seconds']:.1f} s)")


def print_web_load(load: dict) -> None:
    print(f"\nweb server load: {load['clients']} clients x {load['jobs_per_client']} jobs, "
          f"{'x'.join(map(str, load['shape']))} stroke slabs, one server on 127.0.0.1: "
          f"{load['jobs_done']} jobs in {load['wall_s']:.1f} s ({load['jobs_per_minute']:.1f} jobs/min), "
          f"{'all results correct' if load['all_correct'] else 'NOT ALL CORRECT: ' + '; '.join(load['failures'])}")
    print(f"  queue wait median {load['queue_wait_median_s']:.1f} s, max {load['queue_wait_max_s']:.1f} s; "
          f"run per job median {load['run_median_s']:.1f} s")
    for row in load["jobs"]:
        print(f"  client {row['client']}  queue wait {row['queue_wait_s']:6.1f} s  run {row['run_s']:5.1f} s  "
              f"submit to download {row['end_to_end_s']:6.1f} s  max |error| {row['max_abs_error']:.1e}")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..benchmarks.memory import memory_cases, peak_memory
    from ..benchmarks.speed import (
        PRECISION_NAMES,
        SIZE,
        compiled_timing,
        conv_throughput,
        fuser_timing,
        machine_facts,
        model_flops,
        pair_timings,
        precisions_for,
        sfnn_timings,
        stroke_end_to_end,
    )
    from ..benchmarks.stall import stall_figures
    from ..benchmarks.startup import startup_timings
    from ..fusion.fuser import plan_fusion
    from ..network.devices import resolve_device
    from ..network.model import EHDRAN, fold_for_inference
    from .cli import COMMANDS

    device = resolve_device(args.device)
    repeats = 3 if args.quick else 7
    plan = plan_fusion((SIZE, SIZE), device=args.device, precision=args.precision)
    precisions = precisions_for(args.precision, device)
    torch.manual_seed(0)
    base = EHDRAN().eval()
    results: dict = {"command": " ".join(["python -m EdranFusionLib benchmark", *sys.argv[2:]]),
                     "machine": machine_facts(device)}
    results["conv_gflops"] = {PRECISION_NAMES[d]: conv_throughput(device, d, plan.workers, repeats)
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
    results["stall"] = stall_figures()
    results["startup"] = startup_timings(list(COMMANDS), 3 if args.quick else 5)
    if not args.quick or args.large:
        results["memory"] = [peak_memory(case) for case in memory_cases(args.large)]
    if args.strategies:
        from ..benchmarks.strategies import strategy_timings

        results["strategies"] = strategy_timings(base, args.precision, repeats)
    if args.web:
        from ..benchmarks.web_load import web_load

        results["web_load"] = web_load()
    results["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    print_report(results)
    print_startup(results["startup"])
    if args.strategies:
        from ..benchmarks.strategies import print_strategies

        print_strategies(results["strategies"])
    if "web_load" in results:
        print_web_load(results["web_load"])
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    return 0
