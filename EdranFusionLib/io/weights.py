"""Trained weights: the bundled registry, integrity checks and loading.

Each bundled model is ``weights/<name>.pt`` (a plain state dict, loaded with ``weights_only=True``) plus its
model card ``weights/<name>.json`` holding the task, training facts and the file's sha256. A bundled file whose
sha256 differs from its card is refused, never loaded silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import EdranFusionError
from ..network.model import EHDRAN
from .atomic import atomic_output

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_MODEL = "general"
KNOWN_MODELS = ("ct-mri", "spect-mri", "pet-mri", "general")


@dataclass(frozen=True)
class BundledModel:
    name: str
    task: str
    weights_file: Path
    sha256: str
    card: dict


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_models(directory: Path = WEIGHTS_DIR) -> dict[str, BundledModel]:
    """Models whose card and weights are installed, by name."""
    models = {}
    for card_path in sorted(directory.glob("*.json")):
        card = json.loads(card_path.read_text())
        weights_file = directory / card["file"]
        if weights_file.is_file():
            models[card["name"]] = BundledModel(card["name"], card["task"], weights_file, card["sha256"], card)
    return models


def _no_weights_message(name: str) -> str:
    installed = ", ".join(bundled_models()) or "none"
    if name in KNOWN_MODELS:
        return (f"no trained weights are installed for model '{name}' (installed: {installed}); "
                "train them with `python -m EdranFusionLib.train` or pass --model PATH to a weights file")
    return (f"unknown model '{name}': not a bundled model ({', '.join(KNOWN_MODELS)}) nor an existing file; "
            "check the name or path")


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, str | None]:
    """Weights file and the sha256 it must have (None for user files without a card)."""
    text = str(name_or_path)
    bundled = bundled_models()
    if text in bundled:
        return bundled[text].weights_file, bundled[text].sha256
    path = Path(text).expanduser()
    if path.is_file():
        card = path.with_suffix(".json")
        expected = json.loads(card.read_text()).get("sha256") if card.is_file() else None
        return path, expected
    raise EdranFusionError(_no_weights_message(text))


def load_state_dict(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    """Read and verify a weights file; every failure is a one-line user error."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise EdranFusionError(
            f"weights file {path} fails its sha256 check (corrupt or replaced); reinstall it or retrain the model"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise EdranFusionError(
            f"weights file {path} is not a readable PyTorch state dict ({type(error).__name__}); "
            "give a file saved by EdranFusionLib training"
        ) from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EdranFusionError(f"weights file {path} is not an EH-DRAN state dict; give a file saved by training")
    return state


def model_from_state_dict(state: dict[str, torch.Tensor], source: str = "weights") -> EHDRAN:
    """Build the matching architecture (with or without DRGO) and load ``state`` strictly."""
    model = EHDRAN(use_drgo=any(key.startswith("drgo.") for key in state))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise EdranFusionError(
            f"{source} is not an EH-DRAN state dict of this architecture ({first[:120]}); "
            "give a file saved by EdranFusionLib training"
        ) from error
    return model.eval()


def load_model(name_or_path: str | os.PathLike = DEFAULT_MODEL, device: str | torch.device = "cpu") -> EHDRAN:
    """A bundled model by name (``ct-mri``, ``spect-mri``, ``pet-mri``, ``general``) or a weights file, in eval mode."""
    path, expected = resolve(name_or_path)
    return model_from_state_dict(load_state_dict(path, expected), str(path)).to(device)


def save_bundled(model: EHDRAN, name: str, task: str, card: dict[str, Any], directory: Path = WEIGHTS_DIR) -> Path:
    """Write ``<name>.pt`` and its model card ``<name>.json`` (with the sha256) atomically."""
    weights_file = directory / f"{name}.pt"
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_output(weights_file) as temporary:
        torch.save(state, temporary)
    full_card = {"name": name, "task": task, "file": weights_file.name, "sha256": sha256_of(weights_file), **card}
    with atomic_output(directory / f"{name}.json") as temporary:
        temporary.write_text(json.dumps(full_card, indent=2) + "\n")
    return weights_file
