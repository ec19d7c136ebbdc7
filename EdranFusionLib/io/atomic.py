"""Atomic outputs: write under a temporary name beside the target, rename when complete.

A failed, cancelled or interrupted run therefore leaves either the old output or nothing, never a partial one.
Files are written inside a hidden temporary folder under their final name (so writers that pick a format by
suffix, and formats with companion files such as .mhd + .raw, work unchanged) and moved out at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import EdranFusionError


def check_output_location(target: str | os.PathLike) -> None:
    """Refuse an output whose folder is missing or read-only, so long work can be refused before it starts."""
    parent = Path(target).absolute().parent
    if not parent.is_dir():
        raise EdranFusionError(f"output folder {parent} does not exist; create it or choose another output path")
    if not os.access(parent, os.W_OK):
        raise EdranFusionError(f"output folder {parent} is not writable; choose a writable location")


def _staging_folder(target: Path) -> Path:
    check_output_location(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield where to write ``target`` (a file, or a folder if ``directory``); publish it only on success."""
    target = Path(target).absolute()
    staging = _staging_folder(target)
    try:
        yield staging if directory else staging / target.name
        if directory:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(staging, target)
        else:
            # Companions first, the named file last: a reader never sees the header without its data.
            for produced in sorted(staging.iterdir(), key=lambda p: p.name == target.name):
                os.replace(produced, target.parent / produced.name)
    except OSError as error:
        raise EdranFusionError(
            f"could not write {target}: {error.strerror or error}; check free space and permissions"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
