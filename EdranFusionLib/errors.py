"""User-facing errors: one line saying what is wrong and what to do.

Every layer raises these for bad input; the CLI prints them on one stderr line with exit code 2, the Slicer
module shows them in a dialog. Anything else escaping is a bug, not a user error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class EdranFusionError(Exception):
    """A problem with the user's input or environment, with the fix in the message."""


class FusionCancelled(EdranFusionError):
    """The caller's cancel flag was raised; nothing was written."""

    def __init__(self) -> None:
        super().__init__("fusion cancelled by the user; nothing was written")


class InputWarning(UserWarning):
    """Something in the input was handled rather than refused (e.g. NaN background voxels); one line for the user."""


def exit_status_of(work: Callable[[], int]) -> int:
    """Run an entry point's ``work``; a user error becomes one ``error: ...`` stderr line and exit code 2, the
    convention of every entry point (CLI, training script, developer tools)."""
    try:
        return int(work())
    except EdranFusionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
