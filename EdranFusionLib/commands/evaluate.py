"""`evaluate` sub-command: fusion metrics of a test set for several methods (see evaluation.evaluate).

The evaluation layer (scipy, torch) is imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from ..choices import DEVICE_CHOICES, PRECISION_CHOICES, STRATEGY_NAMES, is_strategy
from ..errors import EdranFusionError
from ..io.weights import default_strategy_of
from ..requirements import import_optional
from .progress import progress_bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a_dir", help="folder of source images A (pairs are matched by file name)")
    parser.add_argument("b_dir", help="folder of source images B")
    parser.add_argument("--model", action="append", default=[], metavar="[LABEL=]NAME_OR_PATH",
                        help="bundled model or weights file to fuse with (repeatable, e.g. ablation models)")
    parser.add_argument("--strategy", default=None,
                        help=f"comma-separated fusion strategies for each model ({', '.join(STRATEGY_NAMES)}); "
                             "default: each model's own (`edranfusion models`)")
    parser.add_argument("--baselines", action="store_true",
                        help="also score the element-wise average and max of the source images (no network)")
    parser.add_argument("--fused", action="append", default=[], metavar="[LABEL=]DIR",
                        help="folder of already fused images named like the pairs (repeatable)")
    parser.add_argument("--pixel-head", action="append", default=[], metavar="[LABEL=]FILE",
                        help="a pixel-domain head (final.pt of fusion_trainer --on-pixels): the learned head's "
                             "control, no network (repeatable)")
    parser.add_argument("--series", default=None,
                        help="only pairs of these series, e.g. 16,21 (names <series><slice>), or slabs of one "
                             "series' slices, e.g. 41:59-81")
    parser.add_argument("--split", default=None, metavar="JSON",
                        help="only the validation series of a training run: its split.json or a model card")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="only every Nth selected pair (adjacent slices of a series are near duplicates)")
    parser.add_argument("--out", default=None, metavar="REPORT_DIR", help="write the report folder here")
    parser.add_argument("--montage-pairs", type=int, default=3, help="pairs shown in montage.png (default 3)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _labelled(text: str, exists: Callable[[str], bool]) -> tuple[str | None, str]:
    """Split ``LABEL=VALUE`` unless the whole text is itself an existing path."""
    if "=" in text and not exists(text):
        label, value = text.split("=", 1)
        if label and "/" not in label:
            return label, value
    return None, text


def methods_from_args(args: argparse.Namespace) -> list:
    """The methods to compare, in the order given: models x strategies, baselines, fused folders, pixel heads."""
    import_optional("scipy", "eval")
    from ..evaluation.comparison import pixel_head
    from ..evaluation.evaluate import Method, folder_method, model_method, pixel_baseline

    strategies = [s.strip() for s in (args.strategy or "").split(",") if s.strip()]
    unknown = [s for s in strategies if not is_strategy(s)]
    if unknown:
        raise EdranFusionError(f"unknown strategy '{unknown[0]}'; choose from {', '.join(STRATEGY_NAMES)}")
    if args.strategy and not args.model:
        raise EdranFusionError("--strategy needs --model: strategies fuse a model's latent features")
    methods = []
    for text in args.model:
        label, model = _labelled(text, os.path.exists)
        label = label or (Path(model).stem if os.path.exists(model) else model)
        for strategy in strategies or [default_strategy_of(model)]:
            name = strategy if len(args.model) == 1 else f"{label}:{strategy}"
            methods.append(Method(name, model_method(model, strategy, args.device, args.precision)))
    if args.baselines:
        methods += [Method(f"pixel-{kind}", pixel_baseline(kind)) for kind in ("average", "max")]
    for text in args.fused:
        label, folder = _labelled(text, os.path.exists)
        methods.append(Method(label or Path(folder).name, folder_method(Path(folder))))
    for text in args.pixel_head:
        label, weights_file = _labelled(text, os.path.exists)
        methods.append(Method(label or "pixel-head", pixel_head(weights_file)))
    if not methods:
        raise EdranFusionError("nothing to evaluate: give --model (with --strategy), --baselines, --fused or "
                               "--pixel-head")
    labels = [m.label for m in methods]
    duplicate = next((label for label in labels if labels.count(label) > 1), None)
    if duplicate:
        raise EdranFusionError(f"two methods are both called '{duplicate}'; name them with LABEL=...")
    return methods


def run(args: argparse.Namespace) -> int:
    methods = methods_from_args(args)
    from ..evaluation.evaluate import check_report_folder, evaluate, select_pairs, summarise, text_table, write_report

    if args.out:
        check_report_folder(Path(args.out))  # before the pairs are scored, not after

    names = select_pairs(args.a_dir, args.b_dir, args.series, args.split, args.every)
    with progress_bar(f"evaluating {len(names)} pairs x {len(methods)} methods", args.quiet) as progress:
        rows, montage_rows = evaluate(args.a_dir, args.b_dir, names, methods, montage_pairs=args.montage_pairs,
                                       progress=progress)
    summary = summarise(rows, [m.label for m in methods])
    print(f"{len(names)} pairs from {args.a_dir} and {args.b_dir}")
    print(text_table(summary))
    if args.out:
        settings = {"a_dir": str(args.a_dir), "b_dir": str(args.b_dir), "pairs": list(names),
                    "methods": [m.label for m in methods], "models": args.model, "strategy": args.strategy,
                    "series": args.series, "split": args.split, "every": args.every}
        write_report(Path(args.out), rows, summary, montage_rows, settings)
        print(f"wrote {args.out}")
    return 0
