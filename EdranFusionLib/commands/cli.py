"""`edranfusion <command>` (or `python -m EdranFusionLib <command>`): fuse, models, strategies, train, evaluate,
benchmark, preview, serve.

Each sub-command is one module of this package with ``add_arguments(parser)`` and ``run(args)``. Only the
chosen command's module is imported, so a command that does not need torch never imports it.

User errors (:class:`EdranFusionError`) become one stderr line and exit code 2; an interruption (Ctrl-C or
SIGTERM) exits 130 after the atomic writers have removed their temporary files.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from ..errors import exit_status_of
from ..version import __version__
from .arguments import OneLineParser

EXIT_INTERRUPTED = 130
COMMANDS = {  # name -> (module in this package, help)
    "fuse": ("fuse", "fuse two images, two volumes or two folders of images"),
    "models": ("models", "list the bundled and user-trained models with their task, sha256 and terms"),
    "strategies": ("strategies", "list the fusion strategies: what each does, whether it is the paper's, and "
                   "which models default to it"),
    "train": ("train", "train the EH-DRAN autoencoder (stage 1)"),
    "evaluate": ("evaluate", "fusion metrics, tables and montages for a test set"),
    "benchmark": ("benchmark", "speed and memory figures for this machine"),
    "preview": ("preview", "PNG of the middle slices of volumes, side by side"),
    "serve": ("serve", "web page and API to fuse on this machine from a browser"),
}


def _command_module(name: str):  # noqa: ANN202 (a module)
    return importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``command`` given, only that sub-command's options are built (and its module imported)."""
    parser = OneLineParser(prog="edranfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"EdranFusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_module, help_text) in COMMANDS.items():
        parsed = sub.add_parser(name, help=help_text, description=help_text)
        if command in (None, name):
            module = _command_module(name)
            module.add_arguments(parsed)
            parsed.set_defaults(handler=module.run)
    return parser


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in argv if word in COMMANDS), None)
    args = build_parser(chosen or "").parse_args(argv)
    if "SimpleITK" in sys.modules:  # ITK's multi-line warnings; our errors say what matters
        sys.modules["SimpleITK"].ProcessObject_SetGlobalWarningDisplay(False)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return exit_status_of(lambda: args.handler(args))
    except KeyboardInterrupt:
        print("error: interrupted; no output was written", file=sys.stderr)
        return EXIT_INTERRUPTED
