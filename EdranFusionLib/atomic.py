"""Atomic outputs: write under a temporary name beside the target, rename when complete.

A failed, cancelled or interrupted run therefore leaves either the old file or nothing, never a partial one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import EdranFusionError


def _temporary_sibling(target: Path, directory: bool) -> Path:
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise EdranFusionError(f"output folder {parent} does not exist; create it or choose another output path")
    if not os.access(parent, os.W_OK):
        raise EdranFusionError(f"output folder {parent} is not writable; choose a writable location")
    # Keep the full suffix (e.g. ".nii.gz") so writers that choose a format by extension still work.
    suffix = "".join(target.suffixes) if not directory else ""
    if directory:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=parent))
    fd, name = tempfile.mkstemp(prefix=f".{target.stem.split('.')[0]}.", suffix=f".partial{suffix}", dir=parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` (a file, or a folder if ``directory``); publish on success."""
    target = Path(target)
    temporary = _temporary_sibling(target, directory)
    try:
        yield temporary
        if directory and target.is_dir():
            shutil.rmtree(target)
        os.replace(temporary, target)
    except OSError as error:
        _remove(temporary)
        reason = error.strerror or str(error)
        raise EdranFusionError(f"could not write {target}: {reason}; check free space and permissions") from error
    except BaseException:
        _remove(temporary)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
