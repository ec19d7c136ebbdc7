"""`python -m EdranFusionLib <command>`: fuse, models, train, evaluate, benchmark, preview.

User errors (:class:`EdranFusionError`) become one stderr line and exit code 2; an interruption (Ctrl-C or
SIGTERM) exits 130 after the atomic writers have removed their temporary files.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import ModuleType

import SimpleITK as sitk

from . import fuse_command, preview
from .arguments import OneLineParser, run_reporting_errors
from .weights import KNOWN_MODELS, bundled_models

EXIT_INTERRUPTED = 130


def _list_models(_args: argparse.Namespace) -> int:
    installed = bundled_models()
    if not installed:
        print("no trained weights are installed; train them with `python -m EdranFusionLib train`")
    for model in installed.values():
        print(f"{model.name:10s} {model.task:40s} sha256 {model.sha256}")
    missing = [name for name in KNOWN_MODELS if name not in installed]
    if installed and missing:
        print(f"not installed: {', '.join(missing)}")
    return 0


def _commands() -> dict[str, tuple[str, ModuleType | None]]:
    from . import benchmark, evaluate, train

    return {
        "fuse": ("fuse two images, two volumes or two folders of images", fuse_command),
        "models": ("list the bundled models with their task and sha256", None),
        "train": ("train the EH-DRAN autoencoder (stage 1)", train),
        "evaluate": ("fusion metrics, tables and montages for a test set", evaluate),
        "benchmark": ("speed and memory figures for this machine", benchmark),
        "preview": ("PNG of the middle slices of volumes, side by side", preview),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m EdranFusionLib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module) in _commands().items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if module is None:
            command.set_defaults(handler=_list_models)
        else:
            module.add_arguments(command)
            command.set_defaults(handler=module.run)
    return parser


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; our errors say what matters
    try:
        return run_reporting_errors(args.handler, args)
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
