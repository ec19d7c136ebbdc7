"""`models` sub-command: the bundled models with their task and sha256."""

from __future__ import annotations

import argparse

from ..choices import KNOWN_MODELS
from ..io.weights import bundled_models


def add_arguments(_parser: argparse.ArgumentParser) -> None:
    """`models` takes no options."""


def run(_args: argparse.Namespace) -> int:
    installed = bundled_models()
    if not installed:
        print("no trained weights are installed; train them with `python -m EdranFusionLib train`")
    for model in installed.values():
        print(f"{model.name:10s} {model.task:40s} sha256 {model.sha256}")
    missing = [name for name in KNOWN_MODELS if name not in installed]
    if installed and missing:
        print(f"not installed: {', '.join(missing)}")
    return 0
