"""`strategies` sub-command: every fusion strategy with one line on what it does and whether it is the paper's
method, and which installed models fuse with it by default. Torch-free, so it answers at once."""

from __future__ import annotations

import argparse
import json

from ..choices import strategies_offered, strategy_description
from ..io.weights import card_default_strategy, installed_models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document: name, description, default for")


def run(args: argparse.Namespace) -> int:
    defaults = {model.name: card_default_strategy(model.card) for model in installed_models().values()}
    rows = [{"name": name, "description": strategy_description(name),
             "default_for": [model for model, strategy in defaults.items() if strategy == name]}
            for name in strategies_offered(defaults.values())]
    if args.json:
        print(json.dumps({"strategies": rows}, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        default_for = f"  [default of {', '.join(row['default_for'])}]" if row["default_for"] else ""
        print(f"{row['name']:{width}s}  {row['description']}{default_for}")
    print("any activity-p<P> (0 <= P <= 8) is accepted too; --strategy sfnn-max is the paper's method on any model")
    return 0
