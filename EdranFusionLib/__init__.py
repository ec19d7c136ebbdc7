"""EdranFusionLib: EH-DRAN + SFNN fusion of multimodal medical images, usable with or without 3D Slicer.

    >>> from EdranFusionLib import fuse_volumes, read_volume, write_volume
    >>> fused = fuse_volumes(read_volume("T2.nii.gz"), read_volume("FLAIR.nii.gz"), model="general")
    >>> write_volume(fused, "fused.nii.gz")

Layers, each importing only those before it: errors, choices -> network (model, VGG, losses, devices) -> io (files,
weights) -> fusion (rules incl. SFNN, colour, intensity, fuser, pipeline) -> training -> evaluation ->
benchmarks -> api, slicer_bridge -> commands (the CLI).

The public names (api.py) are loaded on first use, so ``import EdranFusionLib`` and the CLI's ``--help`` do not
import torch.
"""

from __future__ import annotations

import importlib

from .version import __version__ as __version__


def _api():  # noqa: ANN202 (a module)
    return importlib.import_module(".api", __name__)


def __getattr__(name: str) -> object:
    """The public names of api.py, imported on first use: importing a torch-free part (choices, io.weights, the
    CLI's parser, as the Slicer panel and ``--help`` do) must not load torch; dunder probes by tools never do."""
    if name == "__all__":
        return [*_api().__all__, "__version__"]
    if not name.startswith("__") and name in _api().__all__:
        return getattr(_api(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_api().__all__})
