"""Weights files <-> EH-DRAN models: verified loading (sha256, ``weights_only=True``, strict keys) and saving
a bundled model with its card. The registry of names and cards is weights.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..choices import DEFAULT_MODEL
from ..errors import EdranFusionError
from ..network.fusion_head import FusionHead
from ..network.model import EHDRAN
from .atomic import atomic_output
from .weights import WEIGHTS_DIR, resolve, sha256_of


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
    """Build the matching architecture (with or without DRGO, with or without the learned fusion head) and
    load ``state`` strictly."""
    model = EHDRAN(use_drgo=any(key.startswith("drgo.") for key in state))
    if any(key.startswith("fusion_head.decoder.") for key in state):
        raise EdranFusionError(
            f"{source} holds a learned fusion head of an earlier version (weights and a decoder copy), which this "
            "version replaced by a mixture head; train the head again (training/fusion_trainer.py)"
        )
    if any(key.startswith("fusion_head.") for key in state):
        model.fusion_head = FusionHead(fused_decoder=any(key.startswith("fusion_head.fused_decoder.") for key in state))
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
