"""Trained weights: the registry of bundled and user models and their cards (torch-free; loading is in
model_files.py).

Each model is ``<name>.pt`` (a plain state dict, loaded with ``weights_only=True``) plus its model card
``<name>.json`` holding the task, training facts, terms of use and the file's sha256. Bundled models live in the
package's weights/ folder; models a user trains live in the user data folder (user_data.py) and are found by
name the same way. A file whose sha256 differs from its card is refused, never loaded silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..choices import DEFAULT_STRATEGY, KNOWN_MODELS, is_strategy
from ..errors import EdranFusionError
from .user_data import user_models_dir

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


@dataclass(frozen=True)
class BundledModel:
    name: str
    task: str
    weights_file: Path
    sha256: str
    card: dict
    origin: str = "bundled"  # or "user": trained by the user, in the user data folder


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_models(directory: Path = WEIGHTS_DIR, origin: str = "bundled") -> dict[str, BundledModel]:
    """Models whose card and weights are in ``directory`` (by default the package's), by name."""
    models = {}
    for card_path in sorted(directory.glob("*.json")):
        card = json.loads(card_path.read_text())
        weights_file = directory / card["file"]
        if weights_file.is_file():
            models[card["name"]] = BundledModel(card["name"], card["task"], weights_file, card["sha256"], card, origin)
    return models


def installed_models() -> dict[str, BundledModel]:
    """Bundled models, then the user's trained ones (a user model cannot shadow a bundled name)."""
    bundled = bundled_models()
    user = bundled_models(user_models_dir(), "user")
    return {**bundled, **{name: model for name, model in user.items() if name not in bundled}}


def _no_weights_message(name: str) -> str:
    installed = ", ".join(installed_models()) or "none"
    if name in KNOWN_MODELS:
        return (f"no trained weights are installed for model '{name}' (installed: {installed}); "
                "train them with `python -m EdranFusionLib.train` or pass --model PATH to a weights file")
    return (f"unknown model '{name}': not a bundled model ({', '.join(KNOWN_MODELS)}) nor an existing file; "
            "check the name or path")


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, str | None]:
    """Weights file and the sha256 it must have (None for user files without a card)."""
    text = str(name_or_path)
    installed = installed_models()
    if text in installed:
        return installed[text].weights_file, installed[text].sha256
    path = Path(text).expanduser()
    if path.is_file():
        card = path.with_suffix(".json")
        expected = json.loads(card.read_text()).get("sha256") if card.is_file() else None
        return path, expected
    raise EdranFusionError(_no_weights_message(text))


def card_of(model: object) -> dict | None:
    """The card of an installed model name, or of a weights file with ``<file>.json`` beside it; else None."""
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        return None
    installed = installed_models()
    if str(model) in installed:
        return installed[str(model)].card
    try:
        card = Path(model).expanduser().with_suffix(".json")
        return json.loads(card.read_text()) if card.is_file() else None
    except (OSError, ValueError):  # no usable card: the file is fused with the paper's rule
        return None


def card_default_strategy(card: dict | None) -> str:
    """A card's ``default_strategy`` (bundled cards: the rule chosen for the model's task on training series,
    evaluation/study.py), else the paper's sfnn-max (no card, or a name this version does not know)."""
    chosen = (card or {}).get("default_strategy")
    return chosen if isinstance(chosen, str) and is_strategy(chosen) else DEFAULT_STRATEGY


def default_strategy_of(model: object) -> str:
    """The strategy a model (installed name, weights file or model object) fuses with when none is asked for."""
    return card_default_strategy(card_of(model))
