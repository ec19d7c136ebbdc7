"""Shared command-line plumbing: argument errors on one line with exit code 2, like every other user error
(errors.exit_status_of), for `python -m EdranFusionLib` and the training script (also run by Slicer)."""

from __future__ import annotations

import argparse

from ..errors import EXIT_USER_ERROR


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message; users get the message alone, on one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")
