"""EdranFusionLib: EH-DRAN + SFNN fusion of multimodal medical images, usable with or without 3D Slicer.

    >>> from EdranFusionLib import fuse_volumes, read_volume, write_volume
    >>> fused = fuse_volumes(read_volume("T2.nii.gz"), read_volume("FLAIR.nii.gz"), model="general")
    >>> write_volume(fused, "fused.nii.gz")

Layers, each importing only those before it: errors, choices -> network (model, VGG, losses, devices) -> io (files,
weights) -> fusion (rules incl. SFNN, colour, intensity, fuser, pipeline) -> training -> evaluation ->
benchmarks -> api, slicer_bridge -> commands (the CLI).
"""

import importlib as _importlib


def _api():
    return _importlib.import_module(f"{__name__}.api")


def __getattr__(name: str):
    """The public names of api.py (and its ``__all__``), imported on first use: importing a torch-free part
    (choices, io.weights, fusion.background, as the Slicer panel does when it opens) must not load torch."""
    if name == "__all__" or name in _api().__all__:
        return getattr(_api(), name)
    raise AttributeError(f"module 'EdranFusionLib' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_api().__all__])
