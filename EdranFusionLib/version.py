"""The product version, in one place: the build (pyproject.toml), ``EdranFusionLib.__version__``,
``edranfusion --version`` and every fused output's provenance record read it from here."""

__version__ = "0.1.0"
