"""DICOM folders as scanners and PACS export them: several series, stray files, gaps, tilt, multi-frame files.

Every file under the folder (subfolders too) is opened header-only; files that are not DICOM images (DICOMDIR,
structured reports, presentation states, text, thumbnails without pixels) are skipped. Image files are grouped
by SeriesInstanceUID. A folder with one series is read as it is; with several, the caller picks one by UID
(``--series-a`` / ``--series-b`` on the command line) or gives the series' own subfolder, and the error lists
them (UID, description, slice count, where they are).

Before a series of single-frame files is read its slices are checked against each other: one orientation,
one size, slice positions along the slice normal without duplicates or gaps and evenly spaced, and no gantry
tilt (positions stepping off the normal: ITK's grid cannot represent the sheared volume, so it is refused
with what to do rather than read with wrong geometry). A multi-frame file is read as one volume.
"""

from __future__ import annotations

import contextlib
import locale
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import EdranFusionError

_SERIES_UID, _DESCRIPTION, _ROWS, _COLUMNS, _FRAMES = "0020|000e", "0008|103e", "0028|0010", "0028|0011", "0028|0008"
_POSITION, _ORIENTATION, _INSTANCE = "0020|0032", "0020|0037", "0020|0013"
_BITS_ALLOCATED, _SAMPLES = "0028|0100", "0028|0002"
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little-endian byte order
_POSITION_TOLERANCE_MM = 1e-3
_SPACING_TOLERANCE = 0.01  # relative: steps further than 1% from the typical step are uneven
_TILT_TOLERANCE_DEGREES = 0.1


@contextlib.contextmanager
def process_locale_kept() -> Iterator[None]:
    """GDCM switches the whole process to the "C" locale when it writes decimal-string tags (orientation,
    position, spacing) and does not switch back, after which Python writes text as ASCII. Restore it."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


@dataclass
class DicomSeries:
    """The image files of one series, as found on disk."""

    uid: str
    description: str = ""
    files: list[Path] = field(default_factory=list)
    headers: list[sitk.ImageFileReader] = field(default_factory=list)
    frames: int = 0

    def summary(self, root: Path) -> str:
        folders = sorted({str(f.parent.relative_to(root)) for f in self.files})
        where = "" if folders == ["."] else f" in {', '.join(folders)}"
        return f"{self.uid} ('{self.description or 'no description'}', {self.frames} slices{where})"


class _Unreadable(Exception):
    """GDCM could not parse the file (not DICOM, a DICOM object without pixels, or a damaged file)."""


def _header(path: Path) -> sitk.ImageFileReader | None:
    """The file's DICOM header, or None when it is a DICOM object without a pixel matrix."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise _Unreadable() from None
    has_pixels = reader.HasMetaDataKey(_ROWS) and reader.HasMetaDataKey(_COLUMNS)
    return reader if has_pixels and reader.HasMetaDataKey(_SERIES_UID) else None


def _tag(reader: sitk.ImageFileReader, tag: str) -> str:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def find_series(folder: Path) -> dict[str, DicomSeries]:
    """Every DICOM image series under ``folder`` by SeriesInstanceUID, in the order first found."""
    series: dict[str, DicomSeries] = {}
    unreadable: list[Path] = []
    damaged: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            try:
                reader = _header(Path(root) / name)
            except _Unreadable:
                unreadable.append(Path(root) / name)
                continue
            if reader is None:
                continue
            if _pixel_data_cut_short(Path(root) / name, reader):
                damaged.append(Path(root) / name)
                continue
            uid = _tag(reader, _SERIES_UID)
            entry = series.setdefault(uid, DicomSeries(uid, _tag(reader, _DESCRIPTION)))
            entry.files.append(Path(root) / name)
            entry.headers.append(reader)
            entry.frames += int(_tag(reader, _FRAMES) or 1)
    damaged += [path for path in unreadable if _damaged_image(path)]
    if damaged:
        raise EdranFusionError(
            f"{len(damaged)} DICOM image file(s) under {folder} cannot be read (cut short or damaged), e.g. "
            f"{damaged[0].relative_to(folder)}; copy or export the series again"
        )
    return series


def _pixel_data_cut_short(path: Path, reader: sitk.ImageFileReader) -> bool:
    """Whether the file ends before its uncompressed Pixel Data element does. GDCM refuses such a file from
    SimpleITK 2.5.4 on; older releases (Slicer bundles 2.3 and 2.5.2) read it and fill in the missing pixels.
    The element is the last one in the file whose length is the header's pixel count in bytes (an icon image
    nested earlier has its own); compressed (encapsulated) pixel data has no length to check and passes."""
    try:
        frames = int(_tag(reader, _FRAMES) or 1)
        expected = (int(_tag(reader, _ROWS)) * int(_tag(reader, _COLUMNS)) * frames
                    * int(_tag(reader, _SAMPLES) or 1) * (int(_tag(reader, _BITS_ALLOCATED) or 8) // 8))
    except ValueError:
        return False
    expected += expected % 2  # values are padded to even length
    data = path.read_bytes()
    at = data.rfind(_PIXEL_DATA_TAG)
    while at >= 0:
        explicit_vr = data[at + 4:at + 6] in (b"OW", b"OB")
        length_at = at + 8 if explicit_vr else at + 4
        if int.from_bytes(data[length_at:length_at + 4], "little") == expected:
            return length_at + 4 + expected > len(data)
        at = data.rfind(_PIXEL_DATA_TAG, 0, at)
    return False


def _damaged_image(path: Path) -> bool:
    """An unparseable DICOM file (preamble + 'DICM') that holds a Rows element (0028,0010): an image file cut
    short or damaged. DICOMDIRs, reports and presentation states have no Rows; other files have no 'DICM'."""
    with open(path, "rb") as file:
        if file.read(132)[128:] != b"DICM":
            return False
        return b"\x28\x00\x10\x00" in file.read(1 << 16)


def is_dicom_folder(folder: Path) -> bool:
    return bool(find_series(folder))


def read_dicom_folder(folder: Path, uid: str | None = None) -> sitk.Image:
    """The one series in ``folder`` (or the one named by ``uid``), checked slice against slice, as one volume."""
    series = find_series(folder)
    if not series:
        raise EdranFusionError(f"folder {folder} holds no DICOM images; give a volume file or a DICOM series folder")
    listing = "; ".join(s.summary(folder) for s in series.values())
    if uid is not None and uid not in series:
        raise EdranFusionError(f"folder {folder} has no DICOM series {uid}; it holds: {listing}")
    if uid is None and len(series) > 1:
        raise EdranFusionError(
            f"folder {folder} holds {len(series)} DICOM series; choose one by UID (--series-a/--series-b) or give "
            f"its subfolder: {listing}"
        )
    chosen = series[uid] if uid is not None else next(iter(series.values()))
    return _read_series(chosen, folder)


def _read_series(series: DicomSeries, folder: Path) -> sitk.Image:
    what = f"DICOM series {series.uid} in {folder}"
    if len(series.files) == 1:
        return _read(lambda: sitk.ReadImage(str(series.files[0]), imageIO="GDCMImageIO"), what)
    if series.frames != len(series.files):
        raise EdranFusionError(f"{what} mixes multi-frame and single-frame files; export each as its own series")
    ordered, grid = _ordered_slices(series.files, series.headers, what)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(f) for f in ordered])
    image = _read(reader.Execute, what)
    if grid is not None:
        # The checked headers' grid, not GDCM's reading of it: ITK derives the spacing from the first two slices,
        # and GDCM before SimpleITK 2.4 (Slicer 5.8's 2.3) ignores a Secondary Capture's position and orientation.
        spacing = list(image.GetSpacing())
        spacing[2] = grid.step
        image.SetSpacing(spacing)
        image.SetOrigin(grid.origin)
        image.SetDirection(grid.direction)
    return image


def _read(execute, what: str) -> sitk.Image:  # noqa: ANN001 (a reader's Execute)
    try:
        return execute()
    except RuntimeError as error:
        raise EdranFusionError(f"cannot read {what}; a file is damaged or uses an unsupported encoding") from error


def _floats(text: str) -> np.ndarray | None:
    try:
        return np.array([float(v) for v in text.split("\\")])
    except ValueError:
        return None


def _instance(header: sitk.ImageFileReader) -> float:
    numbers = _floats(_tag(header, _INSTANCE))
    return float(numbers[0]) if numbers is not None and len(numbers) else 0.0


@dataclass(frozen=True)
class _SliceGrid:
    """Where a checked series of slices lies: the first slice's position, the axes as an ITK direction, the step."""

    origin: tuple[float, ...]
    direction: tuple[float, ...]
    step: float


def _ordered_slices(
    files: list[Path], headers: list[sitk.ImageFileReader], what: str
) -> tuple[list[Path], _SliceGrid | None]:
    """Files sorted along the slice normal and their grid; an error naming duplicates, gaps, tilt."""
    sizes = {(_tag(h, _ROWS), _tag(h, _COLUMNS)) for h in headers}
    if len(sizes) > 1:
        raise EdranFusionError(f"{what} has slices of different sizes ({', '.join('x'.join(s) for s in sizes)})")
    positions = [_floats(_tag(h, _POSITION)) for h in headers]
    orientations = [_floats(_tag(h, _ORIENTATION)) for h in headers]
    if any(p is None or len(p) != 3 for p in positions) or any(o is None or len(o) != 6 for o in orientations):
        # No geometry to check (e.g. secondary capture): order by instance number, as the files number themselves.
        return [files[i] for i in sorted(range(len(files)), key=lambda i: _instance(headers[i]))], None
    if any(not np.allclose(o, orientations[0], atol=1e-4) for o in orientations):
        raise EdranFusionError(f"{what} has slices of different orientations; it is not one volume")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    along = np.array([float(p @ normal) for p in positions])
    order = np.argsort(along, kind="stable")
    along, points = along[order], np.array(positions)[order]
    steps = np.diff(along)
    duplicate = int(np.argmin(steps)) if len(steps) else 0
    if steps[duplicate] < _POSITION_TOLERANCE_MM:
        first, second = (files[order[duplicate]].name, files[order[duplicate + 1]].name)
        raise EdranFusionError(
            f"{what} has two slices at {along[duplicate]:.2f} mm along the slice normal ({first} and {second}); "
            "remove duplicates, or export one echo/time point per series"
        )
    step = float(np.median(steps))
    _check_tilt(points, normal, what)
    for index, gap in enumerate(steps):
        if abs(gap - step) > _SPACING_TOLERANCE * step:
            missing = round(gap / step) - 1
            kind = f"{missing} missing slice(s)" if missing >= 1 and abs(gap - (missing + 1) * step) <= (
                _SPACING_TOLERANCE * step) else "uneven slice spacing"
            raise EdranFusionError(
                f"{what}: {kind} between {along[index]:.2f} and {along[index + 1]:.2f} mm along the slice normal "
                f"(a step of {gap:.3g} mm where the slices are {step:.3g} mm apart); export the complete series"
            )
    direction = tuple(float(v) for v in np.column_stack([row, column, normal]).ravel())
    return [files[i] for i in order], _SliceGrid(tuple(float(v) for v in points[0]), direction, step)


def _check_tilt(points: np.ndarray, normal: np.ndarray, what: str) -> None:
    """Refuse a series whose slice positions step off the slice normal (CT gantry tilt)."""
    travel = points[-1] - points[0]
    length = float(np.linalg.norm(travel))
    if length == 0:
        return
    tilt = float(np.degrees(np.arccos(min(1.0, abs(float(travel @ normal)) / length))))
    if tilt > _TILT_TOLERANCE_DEGREES:
        raise EdranFusionError(
            f"{what} was acquired with a gantry tilt of {tilt:.1f} degrees; its slices are sheared, which a volume "
            "grid cannot hold. Resample it to an untilted grid first (Slicer's DICOM import with acquisition "
            "geometry regularisation, or dcm2niix) and fuse the result"
        )
