"""The public Python API in one place; ``from EdranFusionLib import ...`` gives the same names.

    >>> from EdranFusionLib.api import fuse_volumes, read_volume, write_volume
    >>> write_volume(fuse_volumes(read_volume("T2.nii.gz"), read_volume("FLAIR.nii.gz")), "fused.nii.gz")
"""

from .choices import STRATEGY_NAMES
from .errors import EdranFusionError, FusionCancelled
from .fusion.pipeline import as_model, fuse_images, fuse_volumes
from .fusion.provenance import provenance_of
from .io.images import read_image, write_image
from .io.model_files import load_model
from .io.volumes import read_volume, write_volume
from .io.weights import bundled_models
from .network.model import EHDRAN

__all__ = [
    "EHDRAN",
    "STRATEGY_NAMES",
    "EdranFusionError",
    "FusionCancelled",
    "as_model",
    "bundled_models",
    "fuse_images",
    "fuse_volumes",
    "load_model",
    "provenance_of",
    "read_image",
    "read_volume",
    "write_image",
    "write_volume",
]
