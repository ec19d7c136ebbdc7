"""`models` sub-command: the bundled models and the user's trained ones, with task, default strategy, sha256 and
terms of use.

``--json`` prints the same facts plus each full model card, for scripts. Torch-free, so it answers at once.
"""

from __future__ import annotations

import argparse
import json

from ..choices import KNOWN_MODELS
from ..io.user_data import user_models_dir
from ..io.weights import card_default_strategy, installed_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document with every model and its card")


def run(args: argparse.Namespace) -> int:
    installed = installed_models()
    if args.json:
        models = [{"name": m.name, "origin": m.origin, "task": m.task, "file": str(m.weights_file), "sha256": m.sha256,
                   "default_strategy": card_default_strategy(m.card), "card": m.card} for m in installed.values()]
        print(json.dumps({"user_models_folder": str(user_models_dir()), "models": models}, indent=2))
        return 0
    if not installed:
        print("no trained weights are installed; train them with `edranfusion train`")
    for model in installed.values():
        terms = model.card.get("license", {}).get("terms", "terms not stated in its card")
        learned = "learned fusion head" if "fusion_head" in model.card else "no fusion head"
        print(f"{model.name:10s} {model.origin:7s} {model.task:12s} default {card_default_strategy(model.card):15s} "
              f"sha256 {model.sha256}  {learned:19s}  {terms}")
    missing = [name for name in KNOWN_MODELS if name not in installed]
    if installed and missing:
        print(f"not installed: {', '.join(missing)}")
    print(f"user models folder: {user_models_dir()} (trained models shipped with `python -m "
          "EdranFusionLib.training.report ship` appear here)")
    return 0
