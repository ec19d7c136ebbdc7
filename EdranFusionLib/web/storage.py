"""Where the server reads and writes: volumes under --data (never outside it), per-job folders, uploads.

Uploads are streamed to disk under a size limit and only ever read as images by SimpleITK: nothing uploaded is
executed, imported or unpickled. A zipped DICOM folder is unpacked member by member into its job folder,
refusing names that would land outside it and archives that expand past the limit.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath

from ..errors import EdranFusionError
from ..io.volumes import volume_suffix

# Companion-file formats (.mhd + .raw, .nhdr + data) cannot arrive as one upload.
UPLOAD_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".zip")
_MAX_LISTED = 2000


class DataFolder:
    """The --data folder: lists its volumes and resolves a relative name to a path inside it, or refuses."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise EdranFusionError(f"--data {root} is not a folder; give a folder of volumes")

    def resolve(self, name: str) -> Path:
        """The file or DICOM folder ``name`` (relative to --data); '..', absolute paths and symlinks out fail."""
        if self.root is None:
            raise EdranFusionError("this server has no --data folder; upload the volumes instead")
        relative = PurePosixPath(name.replace("\\", "/"))
        if not name or relative.is_absolute() or ".." in relative.parts:
            raise EdranFusionError(f"{name!r} is not a name under the data folder; pick one from the list")
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or not path.exists():
            raise EdranFusionError(f"{name!r} is not a name under the data folder; pick one from the list")
        return path

    def volumes(self) -> list[str]:
        """Relative names of volume files and DICOM folders (holding .dcm files), symlinks out of --data skipped."""
        if self.root is None:
            return []
        found: list[str] = []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            here = Path(folder)
            if not here.resolve().is_relative_to(self.root):
                subfolders[:] = []
                continue
            if any(f.lower().endswith(".dcm") for f in files) and here != self.root:
                found.append(here.relative_to(self.root).as_posix())
            for name in sorted(files):
                path = here / name
                if volume_suffix(name) and path.resolve().is_relative_to(self.root):
                    found.append(path.relative_to(self.root).as_posix())
            if len(found) >= _MAX_LISTED:
                return found[:_MAX_LISTED]
        return found


def upload_suffix(name: str) -> str:
    """The accepted suffix of an uploaded file's name, or the one-line error saying what to upload."""
    lower = name.lower()
    suffix = next((s for s in UPLOAD_SUFFIXES if lower.endswith(s)), "")
    if not suffix or Path(name).name != name or name.startswith("."):
        raise EdranFusionError(
            f"{name} is not a supported upload; "
            f"give a {', '.join(UPLOAD_SUFFIXES[:-1])} file or a .zip of a DICOM folder"
        )
    return suffix


def new_folder(parent: Path, prefix: str) -> Path:
    """A fresh private folder (mode 700) under ``parent``."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


async def save_upload(chunks: AsyncIterator[bytes], folder: Path, name: str, limit: int) -> Path:
    """Stream an upload into ``folder``/``name`` (a plain file name, checked); over ``limit`` bytes it is refused."""
    upload_suffix(name)
    target = folder / name
    written = 0
    with open(target, "wb") as out:
        async for chunk in chunks:
            written += len(chunk)
            if written > limit:
                out.close()
                target.unlink()
                raise EdranFusionError(
                    f"{name} is larger than the server's upload limit of {limit // 2**20} MiB; "
                    "start the server with a larger --max-upload-mb or put the file under --data"
                )
            out.write(chunk)
    if written == 0:
        target.unlink()
        raise EdranFusionError(f"{name} is empty; choose the volume file again")
    return target


def unpack_dicom_zip(archive: Path, limit: int) -> Path:
    """Unpack a zipped DICOM folder beside the archive; the folder holding the series is returned."""
    folder = archive.parent / "dicom"
    folder.mkdir()
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > limit:
                raise EdranFusionError(
                    f"the zip expands past the server's upload limit of {limit // 2**20} MiB; upload a smaller series"
                )
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
                    raise EdranFusionError(
                        f"the zip holds an unsafe name {member.filename!r}; zip the DICOM folder itself"
                    )
                target = folder.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
    except zipfile.BadZipFile as error:
        raise EdranFusionError("the uploaded .zip is damaged or not a zip; zip the DICOM folder again") from error
    archive.unlink()
    return _series_folder(folder)


def _series_folder(folder: Path) -> Path:
    """The one folder in the unpacked tree that holds files (a zip of a folder nests it once or more)."""
    holding = sorted({p.parent for p in folder.rglob("*") if p.is_file()})
    if len(holding) != 1:
        raise EdranFusionError(
            "the zip must hold one DICOM folder (found files in "
            f"{len(holding)} folders); zip the folder of one series"
        )
    return holding[0]

