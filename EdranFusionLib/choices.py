"""What users choose from, and the defaults: models, fusion strategies, devices and precisions.

Torch-free, so the CLI's help and the Slicer panel can list the choices without importing torch.
"""

DEFAULT_MODEL = "general"
KNOWN_MODELS = ("ct-mri", "spect-mri", "pet-mri", "general")
STRATEGY_NAMES = ("sfnn-max", "sfnn-mean", "sfnn-sum", "sfnn-identity", "fer", "fl1n", "average", "max")
DEFAULT_STRATEGY = "sfnn-max"
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
