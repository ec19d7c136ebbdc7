"""Shared command-line plumbing: one-line argument errors and the user-error -> exit code 2 convention.

Both `python -m EdranFusionLib` and the training script (also run by Slicer as a plain script) use it, so every
entry point reports problems the same way: one ``error: ...`` line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import EdranFusionError

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message; users get the message alone, on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def run_reporting_errors(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a user error becomes one stderr line and exit code 2."""
    try:
        return int(handler(args))
    except EdranFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
