"""2-D images: reading and writing PNG/JPEG/TIFF/BMP and pairing the files of two folders by name."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..errors import EdranFusionError
from .atomic import atomic_output

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Pixels as uint8 HxW (gray) or HxWx3 (colour); 16-bit gray stays uint16.

    RGB files whose three channels are equal are gray images saved as RGB and come back HxW.
    """
    path = Path(path)
    if not path.exists():
        raise EdranFusionError(f"input file {path} does not exist; check the path")
    if not is_image_file(path):
        raise EdranFusionError(f"{path} is not a supported 2-D image ({', '.join(IMAGE_SUFFIXES)})")
    try:
        with _strict_decoding(), Image.open(path) as image:
            image.load()
            pixels = _pixels_of(image, path)
    # ValueError: Pillow 11 (the last for Slicer 5.8's Python 3.9) reports a TIFF cut short as "buffer is not large
    # enough" where newer releases raise OSError.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise EdranFusionError(f"cannot read image {path} ({error}); the file may be truncated or corrupt") from error
    if pixels.ndim == 3 and (pixels == pixels[..., :1]).all():
        pixels = np.ascontiguousarray(pixels[..., 0])
    return pixels


_STRICT = threading.Lock()


@contextlib.contextmanager
def _strict_decoding() -> Iterator[None]:
    """Pillow decodes lazily and, with ``ImageFile.LOAD_TRUNCATED_IMAGES`` set (a process-wide switch other
    code may flip), fills a cut-short PNG/JPEG/TIFF with gray instead of failing. Reads here always fail."""
    with _STRICT:
        saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _pixels_of(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode in ("I", "F"):
        return np.asarray(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        if (np.asarray(image.convert("RGBA").getchannel("A")) < 255).any():
            raise EdranFusionError(f"{path} has transparent pixels; save it without an alpha channel")
    return np.asarray(image.convert("L" if image.mode in ("1", "L", "LA") else "RGB"))


def write_image(pixels: np.ndarray, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write uint8 gray or RGB pixels atomically; the format follows the suffix.

    ``metadata`` (e.g. a provenance record) goes into PNG text chunks, a TIFF ImageDescription or a JPEG
    comment (as JSON), and for BMP, which has no such field, into a ``<file>.json`` sidecar.
    """
    path = Path(path)
    if not is_image_file(path):
        raise EdranFusionError(f"output {path} needs an image suffix ({', '.join(IMAGE_SUFFIXES)})")
    image_format = Image.registered_extensions()[path.suffix.lower()]
    options: dict = {}
    if metadata and image_format == "PNG":
        options["pnginfo"] = PngInfo()
        for key, value in metadata.items():
            options["pnginfo"].add_text(key, value)
    elif metadata and image_format == "TIFF":
        options["tiffinfo"] = {_TIFF_IMAGE_DESCRIPTION: json.dumps(metadata)}
    elif metadata and image_format == "JPEG":
        options["comment"] = json.dumps(metadata)
    elif metadata:
        with atomic_output(_sidecar(path)) as temporary:
            temporary.write_text(json.dumps(metadata, indent=2) + "\n")
    with atomic_output(path) as temporary:
        Image.fromarray(pixels).save(temporary, format=image_format, **options)


_TIFF_IMAGE_DESCRIPTION = 270


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def read_image_metadata(path: str | os.PathLike) -> dict[str, str]:
    """What :func:`write_image` stored with ``metadata`` (empty when there is none)."""
    path = Path(path)
    with Image.open(path) as image:
        if image.format == "PNG":
            return dict(getattr(image, "text", {}))
        text = image.tag_v2.get(_TIFF_IMAGE_DESCRIPTION) if image.format == "TIFF" else image.info.get("comment")
    if text is None and _sidecar(path).is_file():
        text = _sidecar(path).read_text()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:  # a description or comment written by another program
        return {}


def common_names(folder_a: str | os.PathLike, folder_b: str | os.PathLike) -> list[str]:
    """Image file names present in both folders, sorted; an error if there are none."""
    shared = sorted(_image_names(folder_a) & _image_names(folder_b))
    if not shared:
        raise EdranFusionError(
            f"folders {folder_a} and {folder_b} have no image file names in common; pairs are matched by file name"
        )
    return shared


def _image_names(folder: str | os.PathLike) -> set[str]:
    if not Path(folder).is_dir():
        raise EdranFusionError(f"input folder {folder} does not exist; check the path")
    return {p.name for p in Path(folder).iterdir() if p.is_file() and is_image_file(p)}
