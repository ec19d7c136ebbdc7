"""What made a fused output, recorded inside it: product version, model name + sha256, strategy, device and
precision, in one record built here and written by every output format.

- Volumes: :func:`EdranFusionLib.fuse_volumes` returns an image carrying the record as metadata, which
  ``write_volume`` keeps: NRRD/MHA as ``EdranFusion.<field>`` keys, NIfTI in its 79-character ``descrip``
  (compact form, sha256 shortened to 16 hex digits), DICOM in Image Comments (0020,4000) as JSON.
- 2-D images: ``write_image(pixels, path, provenance=...)`` writes PNG text chunks (``EdranFusion.<field>``),
  a TIFF ImageDescription or a JPEG comment (JSON); BMP has no metadata field, so a ``<file>.json`` sidecar.
- Slicer: slicer_bridge sets the same fields as ``EdranFusion.<field>`` node attributes.
"""

from __future__ import annotations

import hashlib
import json
import os

import SimpleITK as sitk

from ..errors import EdranFusionError
from ..io.volumes import IMAGE_COMMENTS_TAG, NIFTI_NOTES_KEY
from ..io.weights import installed_models, resolve, sha256_of
from ..network.devices import precision_name, resolve_device, resolve_precision
from ..network.model import EHDRAN
from ..version import __version__

PRODUCT = "EdranFusion"
FIELDS = ("product", "version", "model", "model_sha256", "strategy", "device", "precision")
KEY_PREFIX = f"{PRODUCT}."
NIFTI_DESCRIP_LIMIT = 79
_SHORT_SHA = 16


def _model_identity(model: EHDRAN | str | os.PathLike) -> tuple[str, str]:
    """Name and sha256: a bundled/user model's card checksum, a weights file's own, or (an in-memory model)
    the sha256 of its tensors' bytes in state-dict order."""
    if isinstance(model, EHDRAN):
        digest = hashlib.sha256()
        for tensor in model.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return "in-memory model", digest.hexdigest()
    text = str(model)
    path, expected = resolve(text)
    name = text if text in installed_models() else path.stem
    return name, expected or sha256_of(path)


def provenance_of(model: EHDRAN | str | os.PathLike, strategy: str, device: str = "auto",
                  precision: str = "auto") -> dict[str, str]:
    """The record of a fusion run with these settings (``auto`` device and precision resolved as the fuser
    resolves them)."""
    torch_device = resolve_device(device)
    name, sha256 = _model_identity(model)
    return {"product": PRODUCT, "version": __version__, "model": name, "model_sha256": sha256,
            "strategy": strategy, "device": torch_device.type,
            "precision": precision_name(resolve_precision(precision, torch_device))}


def compact(record: dict[str, str]) -> str:
    """One line of at most 79 characters (NIfTI descrip): product version model sha256:<16> strategy device
    precision; a long model name is shortened so the rest always fits."""
    settings = f"{record['strategy']} {record['device']} {record['precision']}"
    tail = f" sha256:{record['model_sha256'][:_SHORT_SHA]} {settings}"
    head = f"{record['product']} {record['version']} "
    room = NIFTI_DESCRIP_LIMIT - len(head) - len(tail)
    return head + record["model"].replace(" ", "_")[:room] + tail


def from_compact(text: str) -> dict[str, str]:
    """Inverse of :func:`compact` (the sha256 is the 16-digit prefix)."""
    parts = text.split(" ")
    if len(parts) != 7 or parts[0] != PRODUCT or not parts[3].startswith("sha256:"):
        raise EdranFusionError(f"'{text}' is not an EdranFusion provenance line")
    return dict(zip(FIELDS, [*parts[:3], parts[3][len("sha256:"):], *parts[4:]]))


def as_text_fields(record: dict[str, str]) -> dict[str, str]:
    """``EdranFusion.<field>`` -> value: the keys of NRRD/MHA headers, PNG text chunks and MRML attributes."""
    return {KEY_PREFIX + field: record[field] for field in FIELDS}


def from_text_fields(fields: dict[str, str]) -> dict[str, str]:
    return {field: fields[KEY_PREFIX + field] for field in FIELDS if KEY_PREFIX + field in fields}


def attach(image: sitk.Image, record: dict[str, str]) -> sitk.Image:
    """Put the record in ``image``'s metadata, where write_volume keeps it for each format."""
    for key, value in as_text_fields(record).items():
        image.SetMetaData(key, value)
    image.SetMetaData(NIFTI_NOTES_KEY, compact(record))
    image.SetMetaData(IMAGE_COMMENTS_TAG, json.dumps(record))
    return image


def read_back(image: sitk.Image) -> dict[str, str]:
    """The record of a volume read from a file: full keys (NRRD, MHA), JSON comments (DICOM) or the NIfTI
    descrip (sha256 shortened); empty when the volume has none."""
    keys = set(image.GetMetaDataKeys())
    full = from_text_fields({key: image.GetMetaData(key) for key in keys if key.startswith(KEY_PREFIX)})
    if full:
        return full
    if IMAGE_COMMENTS_TAG in keys:
        return json.loads(image.GetMetaData(IMAGE_COMMENTS_TAG))
    if "descrip" in keys and image.GetMetaData("descrip").startswith(PRODUCT + " "):
        return from_compact(image.GetMetaData("descrip"))
    return {}
