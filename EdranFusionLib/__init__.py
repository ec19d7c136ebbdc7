"""EdranFusionLib: EH-DRAN + SFNN fusion of multimodal medical images, usable with or without 3D Slicer.

    >>> from EdranFusionLib import fuse_volumes, read_volume, write_volume
    >>> fused = fuse_volumes(read_volume("T2.nii.gz"), read_volume("FLAIR.nii.gz"), model="general")
    >>> write_volume(fused, "fused.nii.gz")

Layers, each importing only those before it: errors, choices -> network (model, VGG, losses, devices) -> io (files,
weights) -> fusion (rules incl. SFNN, colour, intensity, fuser, pipeline) -> training -> evaluation ->
benchmarks -> api, slicer_bridge -> commands (the CLI).
"""

from .api import *  # noqa: F403 (the public names, listed once in api.py)
from .api import __all__  # noqa: F401
