"""`preview` sub-command: a PNG of three axial slices of each volume side by side, to look at a result.

matplotlib (the [plots] extra) is imported when the command runs, so ``--help`` stays fast without it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..fusion.color import is_colour
from ..fusion.intensity import window_for
from ..io import volumes
from ..io.atomic import atomic_output
from ..requirements import import_optional

SLICE_FRACTIONS = (0.35, 0.5, 0.65)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("volumes", nargs="+", help="volumes to show, one column each (e.g. fused A B)")
    parser.add_argument("-o", "--output", required=True, help="PNG file to write")


def axial_slices(image: sitk.Image, fractions: tuple[float, ...] = SLICE_FRACTIONS) -> list[np.ndarray]:
    """Display-ready axial slices (gray in [0,1] or RGB uint8), head at the top."""
    axis = volumes.axial_axis(image)
    stack = volumes.to_axial_stack(sitk.GetArrayFromImage(image), axis)
    if not is_colour(stack):
        stack = window_for(stack, "volume").normalise(stack)
    return [np.flipud(stack[int(f * (len(stack) - 1))]) for f in fractions]


def run(args: argparse.Namespace) -> int:
    import_optional("matplotlib", "plots").use("Agg")
    from matplotlib import pyplot as plt

    columns = [(Path(p).name, axial_slices(volumes.read_volume(p))) for p in args.volumes]
    rows = len(SLICE_FRACTIONS)
    figure, axes = plt.subplots(rows, len(columns), figsize=(3 * len(columns), 3 * rows), squeeze=False)
    for column, (title, slices) in enumerate(columns):
        axes[0, column].set_title(title, fontsize=9)
        for row, picture in enumerate(slices):
            axes[row, column].imshow(picture, cmap="gray", vmin=0, vmax=1 if picture.ndim == 2 else None)
            axes[row, column].axis("off")
    figure.tight_layout()
    with atomic_output(args.output) as temporary:
        figure.savefig(temporary, dpi=90, format="png")
    plt.close(figure)
    print(f"wrote {args.output}")
    return 0
