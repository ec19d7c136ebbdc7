"""`fuse` sub-command: two images, two volumes or two folders of images, written atomically.

The fusion pipeline (torch) is imported when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..choices import DEFAULT_MODEL, DEVICE_CHOICES, PRECISION_CHOICES, STRATEGY_NAMES, strategy_argument
from ..errors import EdranFusionError, InputWarning
from ..io import images, volumes
from ..io.atomic import atomic_output
from ..io.dicom import is_dicom_folder
from ..io.weights import default_strategy_of
from .progress import progress_bar


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="input A: 2-D image, volume file, DICOM series folder, or folder of 2-D images")
    parser.add_argument("b", help="input B, of the same kind as A (co-registered)")
    parser.add_argument("-o", "--output", required=True, help="output image, volume file, DICOM folder or image folder")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or weights file (default: general)")
    parser.add_argument("--strategy", default=None, type=strategy_argument, metavar="STRATEGY",
                        help=f"fusion rule: {', '.join(STRATEGY_NAMES)} or activity-p<P> (default: the model's own, "
                             "see `edranfusion models`; sfnn-max is the paper's)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    parser.add_argument("--precision", default="auto", choices=PRECISION_CHOICES)
    parser.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: fits memory)")
    parser.add_argument("--resample", action="store_true", help="resample volume B onto A's grid when grids differ")
    parser.add_argument("--series-a", metavar="UID", help="DICOM SeriesInstanceUID to take from folder A when it holds "
                        "several series (the error for such a folder lists them)")
    parser.add_argument("--series-b", metavar="UID", help="the same for folder B")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def input_kind(path: Path) -> str:
    """'image', 'volume' or 'folder' (of 2-D images); an error for anything else."""
    if not path.exists():
        raise EdranFusionError(f"input {path} does not exist; check the path")
    if path.is_dir():
        if is_dicom_folder(path):
            return "volume"
        if any(images.is_image_file(p) for p in path.iterdir()):
            return "folder"
        raise EdranFusionError(f"folder {path} holds neither a DICOM series nor 2-D images")
    if images.is_image_file(path):
        return "image"
    if volumes.volume_suffix(path):
        return "volume"
    raise EdranFusionError(
        f"{path.name} has an unsupported format; use {', '.join(images.IMAGE_SUFFIXES + volumes.VOLUME_SUFFIXES)}"
    )


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings about the input (e.g. NaN background voxels) as one ``warning: ...`` line each on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = lambda message, *_rest: print(f"warning: {message}", file=sys.stderr)
        yield


def _check_memory_before_reading(path_a: Path, path_b: Path) -> None:
    """Volume files: refuse from their headers alone what cannot fit (DICOM folders are checked once read)."""
    from ..fusion.pipeline import check_memory

    headers = [None if p.is_dir() else volumes.header_size(p) for p in (path_a, path_b)]
    if None in headers:
        return
    (size, components_a, bytes_a), (_size_b, components_b, bytes_b) = headers
    largest = sorted(size, reverse=True)[:2]
    check_memory(bytes_a + bytes_b, int(np.prod(size, dtype=np.int64)), 3 in (components_a, components_b),
                 (largest[0], largest[-1]))


def run(args: argparse.Namespace) -> int:
    with _one_line_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    path_a, path_b, output = Path(args.a), Path(args.b), Path(args.output)
    kind_a, kind_b = input_kind(path_a), input_kind(path_b)
    if kind_a != kind_b:
        raise EdranFusionError(
            f"A is a {_KIND_WORDS[kind_a]} but B is a {_KIND_WORDS[kind_b]}; give two inputs of the same kind"
        )
    from ..fusion.pipeline import as_model, fuse_images, fuse_volumes
    from ..fusion.provenance import as_text_fields, provenance_of

    as_model(args.model)  # a bad model name or file fails here, before any input is read; then it is cached
    strategy = args.strategy or default_strategy_of(args.model)
    settings = {"model": args.model, "strategy": strategy, "device": args.device, "precision": args.precision}
    provenance = as_text_fields(provenance_of(args.model, strategy, args.device, args.precision))  # 2-D
    if kind_a == "image":
        fused = fuse_images(images.read_image(path_a), images.read_image(path_b), **settings)
        images.write_image(fused, output, provenance)
    elif kind_a == "folder":
        _fuse_folders(path_a, path_b, output, settings, provenance=provenance, quiet=args.quiet)
    else:
        for option, path in (("--series-a", path_a), ("--series-b", path_b)):
            if getattr(args, option[2:].replace("-", "_")) and not path.is_dir():
                raise EdranFusionError(f"{option} picks a series from a DICOM folder, but {path} is a file")
        _check_memory_before_reading(path_a, path_b)
        a, b = volumes.read_volume(path_a, args.series_a), volumes.read_volume(path_b, args.series_b)
        with progress_bar("fusing", args.quiet) as progress:
            fused = fuse_volumes(
                a, b, batch_size=args.batch_size, resample=args.resample, progress=progress, **settings
            )
        volumes.write_volume(fused, output)
    if not args.quiet:
        chosen = "" if args.strategy else f", the default of model {args.model}; --strategy picks another"
        print(f"wrote {output} (strategy {strategy}{chosen})")
    return 0


_KIND_WORDS = {"image": "2-D image", "volume": "3-D volume", "folder": "folder of 2-D images"}


def _fuse_folders(folder_a: Path, folder_b: Path, output: Path, settings: dict, *, provenance: dict[str, str],
                  quiet: bool) -> None:
    """One fused PNG per file name in both folders; the output folder appears only when all are done."""
    from ..fusion.pipeline import fuse_images

    names = images.common_names(folder_a, folder_b)
    with atomic_output(output, directory=True) as staging, progress_bar("fusing pairs", quiet) as progress:
        for done, name in enumerate(names, start=1):
            fused = fuse_images(images.read_image(folder_a / name), images.read_image(folder_b / name), **settings)
            images.write_image(fused, staging / (Path(name).stem + ".png"), provenance)
            progress(done / len(names))
