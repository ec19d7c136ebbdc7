"""Damaged volume files: compressed streams checked end to end, voxel data against what the header promises.

ITK reads a ``.nii.gz`` cut off part-way without complaint and fills the missing voxels with zeros, so a
damaged input would be fused "successfully" with slices of one modality only. Before ITK reads a file,
:func:`check_volume_file` therefore streams every gzip/zlib stream once (bounded memory: 1 MiB of input and at
most 4 MiB of output at a time, nothing kept), which finds a stream that ends early, a failed CRC or length
check, and trailing bytes that are not another gzip member; and it compares the voxel bytes present (raw
file size, or decompressed size) with the size the header promises (NIfTI dims x bitpix; NRRD sizes x type;
MetaImage DimSize x ElementType x channels). Anything it cannot size (text encodings, file lists, unknown
types) is left to ITK rather than guessed.
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdranFusionError

_CHUNK = 1 << 20
_MAX_OUT = 1 << 22
_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_LIMIT = 1 << 20  # text headers longer than this are not NRRD/MetaImage headers
_NIFTI_HEADER_BYTES = 540  # enough for NIfTI-2; NIfTI-1 needs 348

_NRRD_TYPE_BYTES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort",
                     "unsigned short", "unsigned short int", "uint16", "uint16_t"), 2),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t",
                     "float"), 4),
    **dict.fromkeys(("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64",
                     "int64_t", "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t",
                     "double"), 8),
}
_META_TYPE_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


class _Damage(Exception):
    """What is wrong with one stream, worded for the user."""


@dataclass(frozen=True)
class _VoxelData:
    """Where a header says its voxels are: a stream from ``start`` in ``path``; ``expected`` bytes after
    ``skip`` bytes of the decoded stream (``at_end``: the voxels are its last bytes, NRRD "byte skip: -1")."""

    path: Path
    start: int
    skip: int
    expected: int
    encoding: str  # "raw", "gzip" or "zlib"
    at_end: bool = False


def check_volume_file(path: Path) -> None:
    """Raise :class:`EdranFusionError` naming ``path`` and the damage when it is truncated or corrupt."""
    name = path.name.lower()
    try:
        if name.endswith(".nii.gz"):
            _check_nifti_gzip(path)
        elif name.endswith(".nii"):
            _check_data(_nifti_data(path, _read_head(path)), path)
        elif name.endswith((".nrrd", ".nhdr")):
            _check_header_described(path, _nrrd_data)
        elif name.endswith((".mha", ".mhd")):
            _check_header_described(path, _meta_data)
    except _Damage as damage:
        raise EdranFusionError(f"input {path} is damaged: {damage}; copy or download it again") from None


def _read_head(path: Path, size: int = _NIFTI_HEADER_BYTES) -> bytes:
    with open(path, "rb") as file:
        return file.read(size)


def _check_nifti_gzip(path: Path) -> None:
    total, head = _inflate(path, 0, "gzip", keep=_NIFTI_HEADER_BYTES)
    data = _nifti_data(path, head)
    if data is not None and total - data.skip < data.expected:
        raise _Damage(_short_message(data, total - data.skip))


def _nifti_data(path: Path, head: bytes) -> _VoxelData | None:
    """NIfTI-1 or -2 header: dims, bits per voxel and where the voxels start (either byte order)."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack(order + "i", head[:4])[0] == 348 and len(head) >= 348:
            dims = struct.unpack(order + "8h", head[40:56])
            bits = struct.unpack(order + "h", head[72:74])[0]
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            bits = struct.unpack(order + "h", head[14:16])[0]
            dims = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return None  # not a NIfTI header: ITK's reader will say so
    if not 1 <= dims[0] <= 7 or bits <= 0 or any(d < 0 for d in dims[1 : dims[0] + 1]):
        return None
    voxels = math.prod(max(d, 1) for d in dims[1 : dims[0] + 1])
    return _VoxelData(path, 0, max(offset, 348), voxels * bits // 8, "raw")


def _check_header_described(path: Path, describe) -> None:  # noqa: ANN001 (header parser)
    header, header_bytes = _text_header(path)
    data = describe(path, header, header_bytes)
    if data is not None:
        _check_data(data, path)


def _text_header(path: Path) -> tuple[str, int]:
    """The text header (up to NRRD's blank line, or through MetaImage's ElementDataFile line) and its length."""
    with open(path, "rb") as file:
        start = file.read(_HEADER_LIMIT)
    nrrd = re.search(rb"\r?\n\r?\n", start) if start.startswith(b"NRRD") else None
    meta = re.search(rb"ElementDataFile\s*=[^\n]*\n", start)
    end = nrrd.end() if nrrd else meta.end() if meta else len(start)
    return start[:end].decode("latin-1"), end


def _fields(header: str, separator: str) -> dict[str, str]:
    pairs = (line.split(separator, 1) for line in header.splitlines() if separator in line)
    return {key.strip().lower(): value.strip() for key, value in pairs}


def _nrrd_data(path: Path, header: str, header_bytes: int) -> _VoxelData | None:
    fields = _fields(header, ":")
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(fields.get("encoding", "").lower())
    type_bytes = _NRRD_TYPE_BYTES.get(fields.get("type", "").lower())
    data_file = fields.get("data file", fields.get("datafile"))
    if encoding is None or type_bytes is None or "line skip" in fields or "lineskip" in fields:
        return None
    if data_file is not None and (" " in data_file or data_file.upper().startswith("LIST")):
        return None  # a file list or pattern: ITK reads and checks those file by file
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
        skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    except (KeyError, ValueError):
        return None
    location, start = (path.parent / data_file, 0) if data_file else (path, header_bytes)
    return _VoxelData(location, start, max(skip, 0), math.prod(sizes) * type_bytes, encoding, at_end=skip == -1)


def _meta_data(path: Path, header: str, header_bytes: int) -> _VoxelData | None:
    fields = _fields(header, "=")
    type_bytes = _META_TYPE_BYTES.get(fields.get("elementtype", "").upper())
    data_file = fields.get("elementdatafile", "")
    if type_bytes is None or not data_file or data_file.upper().startswith("LIST") or "%" in data_file:
        return None
    try:
        sizes = [int(s) for s in fields["dimsize"].split()]
        channels = int(fields.get("elementnumberofchannels", "1"))
        header_size = int(fields.get("headersize", "0"))
    except (KeyError, ValueError):
        return None
    local = data_file.upper() == "LOCAL"
    compressed = fields.get("compresseddata", "false").lower() == "true"
    location, start = (path, header_bytes) if local else (path.parent / data_file, max(header_size, 0))
    return _VoxelData(location, start, 0, math.prod(sizes) * channels * type_bytes, "zlib" if compressed else "raw",
                      at_end=header_size == -1)


def _check_data(data: _VoxelData | None, header: Path) -> None:
    if data is None:
        return
    if not data.path.is_file():
        raise _Damage(f"its voxel data file {data.path.name} is missing (it must lie beside {header.name})")
    if data.encoding == "raw":
        decoded = os.path.getsize(data.path) - data.start
    else:
        decoded, _head = _inflate(data.path, data.start, data.encoding, keep=0)
    present = decoded if data.at_end else decoded - data.skip
    if present < data.expected:
        raise _Damage(_short_message(data, present))


def _short_message(data: _VoxelData, present: int) -> str:
    what = "decompressed data hold" if data.encoding != "raw" else f"{data.path.name} holds"
    return (f"its header promises {data.expected} bytes of voxel data but the {what} {max(present, 0)} "
            f"(cut short, {data.expected - max(present, 0)} bytes missing)")


def _inflate(path: Path, offset: int, encoding: str, keep: int) -> tuple[int, bytes]:
    """Decompress a gzip (any number of members) or zlib stream once, in bounded memory.

    Returns the decompressed byte count and its first ``keep`` bytes; raises :class:`_Damage` for a stream that
    ends early, fails its checks, or is followed by bytes that are not another gzip member.
    """
    wbits = 31 if encoding == "gzip" else 15
    decoder = zlib.decompressobj(wbits)
    total, head = 0, bytearray()
    with open(path, "rb") as file:
        file.seek(offset)
        while chunk := file.read(_CHUNK):
            pending = chunk
            while pending:
                if decoder.eof:
                    if not (encoding == "gzip" and pending.startswith(_GZIP_MAGIC)):
                        trailing = len(pending) + len(file.read())
                        raise _Damage(f"{trailing} bytes of trailing garbage follow its compressed data")
                    decoder = zlib.decompressobj(wbits)  # a further gzip member
                try:
                    out = decoder.decompress(pending, _MAX_OUT)
                except zlib.error as error:
                    raise _Damage(_zlib_message(str(error))) from None
                total += len(out)
                if len(head) < keep:
                    head += out[: keep - len(head)]
                pending = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
    if not decoder.eof:
        total += len(decoder.flush())  # output still held back by the max_length limit
    if not decoder.eof:
        raise _Damage(f"its {encoding} stream ends early after {total} decompressed bytes (the file was cut off)")
    return total, bytes(head)


def _zlib_message(error: str) -> str:
    if "data check" in error:
        return "its compressed data fail the CRC check (corrupted bytes)"
    if "length check" in error:
        return "its compressed data fail the length check (corrupted or cut and joined)"
    return f"its compressed data are corrupt ({error.rsplit(':', maxsplit=1)[-1].strip()})"
