"""Volumes: SimpleITK reading/writing, grid checks, resampling, and slicing along the head-foot axis.

SimpleITK is the geometry currency of the library: origin, spacing and direction travel with the pixels, in
LPS as ITK defines them. Fusion slices along whichever index axis points closest to superior-inferior, so
sagittally or coronally stored volumes are still fused in axial planes, and the fused stack is put back into
A's storage order so the output keeps A's grid exactly.
"""

from __future__ import annotations

import contextlib
import ctypes
import gzip
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import EdranFusionError
from .atomic import atomic_output
from .dicom import process_locale_kept, read_dicom_folder
from .integrity import check_volume_file

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_COMMENTS_TAG = "0020|4000"  # DICOM Image Comments, copied into every slice written
NIFTI_NOTES_KEY = "ITK_FileNotes"  # ITK writes it to the NIfTI header's descrip field and reads it back as descrip
_NIFTI1_HEADER_SIZE, _NIFTI_DESCRIP = 348, slice(148, 228)  # descrip: 80 bytes, NUL-terminated
_GRID_TOLERANCE = 1e-4  # relative for spacing/direction, in mm (scaled by spacing) for the origin


def volume_suffix(path: str | os.PathLike) -> str:
    """The volume format suffix of ``path`` ('' for a folder or an unknown format)."""
    name = Path(path).name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if name.endswith(suffix)), "")


def read_volume(path: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """A 3-D image from a NIfTI/NRRD/MHA/MHD file (checked for damage first, see integrity.py) or a DICOM folder
    (``series``: the SeriesInstanceUID to take when the folder holds several; see dicom.py)."""
    path = Path(path)
    if not path.exists():
        raise EdranFusionError(f"input {path} does not exist; check the path")
    if path.is_dir():
        image = read_dicom_folder(path, series)
    elif volume_suffix(path):
        check_volume_file(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise EdranFusionError(
                f"cannot read volume {path}; the file is truncated, corrupt or not {volume_suffix(path)}"
            ) from error
    else:
        raise EdranFusionError(
            f"{path.name} is not a supported volume ({', '.join(VOLUME_SUFFIXES)} or a DICOM folder)"
        )
    check_volume(image, str(path))
    return image


def header_size(path: str | os.PathLike) -> tuple[tuple[int, ...], int, int] | None:
    """(size, components, bytes once read) of a volume file from its header alone, without reading voxels;
    None when the header cannot be read (:func:`read_volume` then says what is wrong)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    component_bytes = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID()).GetSizeOfPixelComponent()
    components = reader.GetNumberOfComponents()
    size = tuple(reader.GetSize())
    return size, components, int(np.prod(size, dtype=np.int64)) * components * component_bytes


def check_volume(image: sitk.Image, what: str) -> None:
    """Refuse what cannot be fused: not 3-D, a time series, or a vector that is not RGB."""
    if image.GetDimension() == 4:
        raise EdranFusionError(f"{what} is 4-D (a time series); extract one 3-D volume first")
    if image.GetDimension() != 3:
        raise EdranFusionError(f"{what} is {image.GetDimension()}-D; give a 3-D volume (or two 2-D images)")
    components = image.GetNumberOfComponentsPerPixel()
    if components not in (1, 3):
        raise EdranFusionError(
            f"{what} has {components} components per voxel; EdranFusion fuses scalar or RGB volumes (convert it first)"
        )


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """True when both volumes share size, spacing, origin and direction (to a small tolerance)."""
    if a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    return (
        np.allclose(spacing_a, spacing_b, rtol=_GRID_TOLERANCE, atol=0)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=_GRID_TOLERANCE)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=_GRID_TOLERANCE * float(spacing_a.max()))
    )


def describe_grid(image: sitk.Image) -> str:
    size = "x".join(str(s) for s in image.GetSize())
    spacing = "x".join(f"{s:g}" for s in image.GetSpacing())
    origin = ", ".join(f"{o:.1f}" for o in image.GetOrigin())
    return f"{size} voxels of {spacing} mm at ({origin})"


def align_to(reference: sitk.Image, moving: sitk.Image, resample: bool) -> sitk.Image:
    """``moving`` on ``reference``'s grid: as is when the grids match, resampled (linear, world space) if asked."""
    if same_grid(reference, moving):
        return moving
    if not resample:
        raise EdranFusionError(
            f"the volumes are on different grids (A: {describe_grid(reference)}; B: {describe_grid(moving)}); "
            "register them, or resample B onto A (--resample on the command line, 'Resample B onto A' in Slicer)"
        )
    background = float(np.min(sitk.GetArrayViewFromImage(moving)))
    return sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkLinear, background, moving.GetPixelID())


def axial_axis(image: sitk.Image) -> int:
    """Numpy axis (of ``GetArrayFromImage``'s [k, j, i] order) closest to the superior-inferior direction."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(direction[2])))  # LPS z row: how much each index axis moves along S-I
    return 2 - index_axis


def to_axial_stack(array: np.ndarray, axis: int) -> np.ndarray:
    """Move ``axis`` to the front: [slices, rows, cols(, components)]."""
    return np.moveaxis(array, axis, 0)


def from_axial_stack(stack: np.ndarray, axis: int) -> np.ndarray:
    """Inverse of :func:`to_axial_stack`."""
    return np.moveaxis(stack, 0, axis)


def image_like(array: np.ndarray, reference: sitk.Image, is_vector: bool = False) -> sitk.Image:
    """Wrap ``array`` with ``reference``'s origin, spacing and direction, exactly."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=is_vector)
    image.CopyInformation(reference)
    return image


def blank_like(reference: sitk.Image, pixel_type: int) -> sitk.Image:
    """An image on ``reference``'s grid (zeros) of ``pixel_type``; vector types get three components."""
    components = 3 if pixel_type == sitk.sitkVectorUInt8 else 1
    image = sitk.Image(reference.GetSize(), pixel_type, components) if components > 1 else sitk.Image(
        reference.GetSize(), pixel_type)
    image.CopyInformation(reference)
    return image


def writable_array(image: sitk.Image) -> np.ndarray:
    """A writable numpy view of ``image``'s own pixel buffer ([k, j, i(, c)]), so results are written in place
    instead of copied in at the end. SimpleITK only offers read-only views; the buffer is the image's own
    (made unique first), so the view is valid while ``image`` lives and nothing reallocates it."""
    view = sitk.GetArrayViewFromImage(image)
    buffer = (ctypes.c_byte * view.nbytes).from_address(view.__array_interface__["data"][0])
    return np.frombuffer(buffer, dtype=view.dtype).reshape(view.shape)


def write_volume(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write atomically: a NIfTI/NRRD/MHA/MHD file by suffix, or a DICOM series when ``path`` has no suffix."""
    path = Path(path)
    if volume_suffix(path):
        with atomic_output(path) as temporary:
            _write_with_sitk(image, temporary, compress=path.name.lower().endswith((".gz", ".nrrd", ".mha")))
        return
    if path.suffix:
        raise EdranFusionError(
            f"unsupported output format {path.name}; use {', '.join(VOLUME_SUFFIXES)} or a folder for DICOM"
        )
    with atomic_output(path, directory=True) as folder, process_locale_kept():
        _write_dicom_series(image, folder)


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries print straight to file descriptor 2 (niftilib's "** ERROR: NWAD ...")."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _write_with_sitk(image: sitk.Image, path: Path, compress: bool) -> None:
    """Write, then read back and compare: ITK's NIfTI writer reports a short write on stderr but does not fail."""
    notes = image.GetMetaData(NIFTI_NOTES_KEY) if image.HasMetaDataKey(NIFTI_NOTES_KEY) else ""
    try:
        with _quiet_native_stderr():
            sitk.WriteImage(image, str(path), useCompression=compress)
            if notes and path.name.lower().endswith((".nii", ".nii.gz")):
                _ensure_nifti_descrip(path, notes)
            written = sitk.ReadImage(str(path))
    except (RuntimeError, OSError) as error:  # ITK reports full disks and file size limits as RuntimeError
        raise EdranFusionError(f"could not write {path.name}; check free space and permissions") from error
    same = written.GetSize() == image.GetSize() and np.array_equal(
        sitk.GetArrayViewFromImage(written), sitk.GetArrayViewFromImage(image), equal_nan=True
    )
    if not same:
        raise EdranFusionError(f"could not write {path.name} completely; check free space and permissions")


def _ensure_nifti_descrip(path: Path, text: str) -> None:
    """Make ``text`` the NIfTI-1 file's descrip field: SimpleITK before 2.4 (Slicer 5.8's 2.3) does not write
    ITK_FileNotes there, which would drop the provenance record from every NIfTI it writes. Runs before the
    read-back, so the rewritten file is the one checked."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    wanted = text.encode()[:79].ljust(80, b"\0")
    with opener(path, "rb") as file:
        header = file.read(_NIFTI1_HEADER_SIZE)
    if int.from_bytes(header[:4], "little") != _NIFTI1_HEADER_SIZE or header[_NIFTI_DESCRIP] == wanted:
        return  # not a little-endian NIfTI-1 header, or ITK wrote the field itself
    with opener(path, "rb") as file:
        data = bytearray(file.read())
    data[_NIFTI_DESCRIP] = wanted
    with opener(path, "wb") as file:
        file.write(data)


def _write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """One DICOM file per slice: 16-bit signed stored values with rescale slope/intercept, geometry in the tags."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EdranFusionError("colour volumes cannot be written as DICOM here; write .nrrd or .nii.gz instead")
    volume = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(volume)
    low, high = float(values.min()), float(values.max())
    slope = (high - low) / 65535.0 if high > low else 1.0
    direction = image.GetDirection()
    study_uid = f"1.2.826.0.1.3680043.2.1125.{int(time.time() * 1e6)}"
    shared_tags = {
        "0008|0060": "OT", "0008|0020": time.strftime("%Y%m%d"), "0008|0030": time.strftime("%H%M%S"),
        "0008|103e": "EdranFusion fused volume", "0020|000d": study_uid, "0020|000e": study_uid + ".1",
        "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
        "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
        "0028|1052": f"{low + 32768 * slope:.10g}", "0028|1053": f"{slope:.10g}",
        "0018|0050": f"{image.GetSpacing()[2]:g}",
    }
    if image.HasMetaDataKey(IMAGE_COMMENTS_TAG):  # e.g. the provenance record of a fused volume
        shared_tags[IMAGE_COMMENTS_TAG] = image.GetMetaData(IMAGE_COMMENTS_TAG)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        slice_image = volume[:, :, k]
        for tag, value in shared_tags.items():
            slice_image.SetMetaData(tag, value)
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", f"{study_uid}.1.{k + 1}")
        writer.SetFileName(str(folder / f"slice_{k + 1:04d}.dcm"))
        try:
            writer.Execute(slice_image)
        except RuntimeError as error:
            raise EdranFusionError(f"could not write DICOM slice {k + 1}; check free space and permissions") from error
