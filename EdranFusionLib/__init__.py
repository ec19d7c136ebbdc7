"""EdranFusionLib: EH-DRAN + SFNN fusion of multimodal medical images, usable with or without 3D Slicer.

    >>> from EdranFusionLib import fuse_volumes, read_volume, write_volume
    >>> fused = fuse_volumes(read_volume("T2.nii.gz"), read_volume("FLAIR.nii.gz"), model="general")
    >>> write_volume(fused, "fused.nii.gz")
"""

from .api import fuse_images, fuse_volumes
from .errors import EdranFusionError, FusionCancelled
from .images import read_image, write_image
from .model import EHDRAN
from .strategies import STRATEGY_NAMES
from .volumes import read_volume, write_volume
from .weights import bundled_models, load_model

__all__ = [
    "EHDRAN",
    "STRATEGY_NAMES",
    "EdranFusionError",
    "FusionCancelled",
    "bundled_models",
    "fuse_images",
    "fuse_volumes",
    "load_model",
    "read_image",
    "read_volume",
    "write_image",
    "write_volume",
]
