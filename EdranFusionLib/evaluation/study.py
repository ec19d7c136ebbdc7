"""The spatial-rule study (beyond the paper): tune on training series, score the validation series once.

``tune``: a small grid of hyper-parameters (activity exponent p, two-scale windows, spatial-SFNN window, the guided
pyramid's P, window and levels, max-anchored fusion's P, weight and guided share) on pairs of the TRAINING series
of every task; the choice is the candidate beating both pixel average and pixel max on the most target metrics in
its worst task.
``score``: the chosen rules, their pixel-domain controls, the p sweep for the PSNR-Qabf figure, the paper's sfnn-max
and the pixel baselines on the VALIDATION series, with paired wins and bootstrap intervals, montages and the
trade-off figure. Run as ``python -m EdranFusionLib.evaluation.study tune|score --data HARVARD --out FOLDER``.
``apply`` writes the tuned defaults into the cards; ``adopt-head`` makes the learned head a model's default on
evidence from a training series its held-out run was not trained on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..choices import ANCHORED_STRATEGY, GUIDED_STRATEGY, LEARNED_STRATEGY
from ..errors import EdranFusionError, exit_status_of
from ..fusion import anchored, guided, spatial
from ..io import images
from ..io.atomic import atomic_output
from ..io.weights import WEIGHTS_DIR, card_default_strategy, default_strategy_of, installed_models
from ..training.datasets import series_of
from .comparison import latent_methods, pixel_head, pixel_rule
from .evaluate import Method, pixel_baseline
from .montage import MontageRow, write_montage
from .study_report import P_SWEEP, PIXEL_HEAD, stroke_montage, tradeoff_figure, write_tables
from .study_target import TASKS, beats_both_baselines, beats_its_control, control_of, pixel_control

VAL_SERIES = {"CT-MRI": {"2", "34"}, "SPECT-MRI": {"4", "25", "36"}, "PET-MRI": {"25"}}
PAPER_DEFAULT = "sfnn-max"


def task_pairs(data: Path, task: str, validation: bool, count: int) -> list[str]:
    """``count`` evenly spaced pair names of the task's validation (or training) series."""
    first, second = (data / task / m for m in ("MRI", task.split("-", maxsplit=1)[0]))
    names = [n for n in images.common_names(str(first), str(second))
             if (series_of(Path(n).stem, first) in VAL_SERIES[task]) == validation]
    if not names:
        raise EdranFusionError(f"no {'validation' if validation else 'training'} pairs in {data / task}")
    picks = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return [names[i] for i in sorted(set(picks))]


def _score(data: Path, task: str, names: Sequence[str], methods: Sequence[Method], montage: int = 0
           ) -> tuple[list[dict], list[MontageRow]]:
    from .comparison import target_metrics
    from .metrics import joint_psnr

    rows, shown = [], []
    other = task.split("-", maxsplit=1)[0]
    for index, name in enumerate(names):
        a = images.read_image(data / task / "MRI" / name)
        b = images.read_image(data / task / other / name)
        columns = [("MRI", a), (other, b)]
        for method in methods:
            fused = method.fuse(name, a, b)
            rows.append({"task": task, "pair": name, "method": method.label, **target_metrics(fused, a, b),
                         "PSNR_joint": joint_psnr(a, b, fused)})
            columns.append((method.label, fused))
        if index < montage:
            shown.append(MontageRow(Path(name).stem, columns))
        print(f"{task} {name} done ({index + 1}/{len(names)})", file=sys.stderr, flush=True)
    return rows, shown


def has_fusion_head(model: str) -> bool:
    """Whether the installed model's card lists a learned fusion head."""
    installed = installed_models()
    return model in installed and "fusion_head" in installed[model].card


# A tuned setting's name and the module constant the rules read at call time (so the grid can set it).
_SETTINGS = {"spatial_window": (spatial, "SPATIAL_SFNN_WINDOW"), "base_window": (spatial, "TWO_SCALE_BASE_WINDOW"),
             "energy_window": (spatial, "TWO_SCALE_ENERGY_WINDOW"), "guided_window": (guided, "GUIDED_WINDOW"),
             "guided_power": (guided, "GUIDED_POWER"), "guided_levels": (guided, "GUIDED_LEVELS"),
             "detail_window": (guided, "GUIDED_DETAIL_WINDOW"), "anchor_power": (anchored, "ANCHOR_POWER"),
             "anchor_weight": (anchored, "ANCHOR_WEIGHT"),
             "anchor_guided_share": (anchored, "ANCHOR_GUIDED_SHARE")}


def _set_windows(candidate: dict) -> None:
    for key, (module, constant) in _SETTINGS.items():
        if key in candidate:
            setattr(module, constant, candidate[key])


def _candidate_methods(model: str) -> tuple[list[Method], dict[str, dict]]:
    """Every candidate on ``model`` and, as ``pixel-<label>``, the same candidate on pixels (its control)."""
    candidates = {PAPER_DEFAULT: {"strategy": PAPER_DEFAULT}}
    candidates |= {f"activity-p{p:g}": {"strategy": f"activity-p{p:g}"} for p in (0.25, 0.5, 1.0, 2.0, 4.0)}
    candidates |= {f"two-scale-b{w}": {"strategy": "two-scale", "base_window": w, "energy_window": 7}
                   for w in (7, 15, 31)}
    candidates |= {f"spatial-sfnn-w{w}": {"strategy": "spatial-sfnn", "spatial_window": w} for w in (3, 7, 15)}
    candidates |= {f"guided-pyramid-p{p:g}w{w}n{n}d{d}": {"strategy": GUIDED_STRATEGY, "guided_power": p,
                                                         "guided_window": w, "guided_levels": n, "detail_window": d}
                   for p in (0.5, 1.0, 2.0) for w in (7, 31) for n in (1, 2, 3) for d in (1, 5)}
    candidates |= {f"max-anchored-p{p:g}a{w:g}g{g:g}": {"strategy": ANCHORED_STRATEGY, "anchor_power": p,
                                                        "anchor_weight": w, "anchor_guided_share": g}
                   for p in (0.5, 1.0, 2.0) for w in (0.25, 0.5, 0.75) for g in (0.0, 0.25, 0.5)}
    shared = latent_methods(model, [c["strategy"] for c in candidates.values()], list(candidates))
    own = {label: c for label, c in candidates.items() if control_of(label, c["strategy"]) != "pixel-average"}
    controls = [Method(f"pixel-{label}", pixel_rule(c["strategy"])) for label, c in own.items()]
    methods = []
    for method, candidate in zip([*shared, *controls], [*candidates.values(), *own.values()]):
        def fuse(name, a, b, _method=method, _candidate=candidate):
            _set_windows(_candidate)
            return _method.fuse(name, a, b)
        methods.append(Method(method.label, fuse))
    return methods, candidates


def _worst_task_wins(rows: list[dict], label: str) -> tuple[int, int, float]:
    per_task = [len(beats_both_baselines([r for r in rows if r["task"] == task], label)) for task in TASKS]
    qabf = float(np.mean([r["Qabf"] for r in rows if r["method"] == label]))
    return min(per_task), sum(per_task), qabf


def tune(data: Path, out: Path, pairs: int) -> dict:
    """Grid on training series; writes tune.json with the rows, the score of every candidate and the choice."""
    rows = []
    baselines = [Method(f"pixel-{k}", pixel_baseline(k)) for k in ("average", "max")]
    for task, model in TASKS.items():
        methods, candidates = _candidate_methods(model)
        rows += _score(data, task, task_pairs(data, task, False, pairs), methods + baselines)[0]
    scores = {label: _worst_task_wins(rows, label) for label in candidates}
    chosen = {}
    for family in ("activity", "two-scale", "spatial-sfnn", GUIDED_STRATEGY, ANCHORED_STRATEGY):
        best = max((label for label in scores if label.startswith(family)), key=lambda label: scores[label])
        chosen[family] = {"label": best, **candidates[best]}
    defaults = choose_defaults(rows, {PAPER_DEFAULT: candidates[PAPER_DEFAULT],
                                      **{c["label"]: c for c in chosen.values()}})
    result = {"pairs_per_task": pairs, "scores": scores, "chosen": chosen, "defaults": defaults, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def choose_defaults(rows: list[dict], candidates: dict[str, dict]) -> dict[str, dict]:
    """Each model's default strategy, from training-series rows (fixed before any validation score): per task model
    the candidate beating both pixel baselines on the most target metrics, then beating its own pixel control
    on the most; for ``general`` (any task) the most in its worst task, then in all. Ties keep sfnn-max (first).
    The learned head is not a candidate: the training pairs are its own training data."""
    wins = {label: {task: beats_both_baselines([r for r in rows if r["task"] == task], label) for task in TASKS}
            for label in candidates}
    control = {label: {task: beats_its_control([r for r in rows if r["task"] == task], label,
                                               candidates[label]["strategy"]) for task in TASKS}
               for label in candidates}

    def entry(label: str) -> dict:
        return {"label": label, **candidates[label], "beats_both_baselines": wins[label],
                "beats_pixel_control": control[label]}

    defaults = {model: entry(max(candidates, key=lambda label, task=task: (len(wins[label][task]),
                                                                          len(control[label][task]))))
                for task, model in TASKS.items()}
    defaults["general"] = entry(max(candidates, key=lambda label: (min(len(w) for w in wins[label].values()),
                                                                   sum(len(w) for w in wins[label].values()))))
    return defaults


def apply_defaults(out: Path, directory: Path) -> dict[str, str]:
    """Write tune.json's defaults into the bundled cards as ``default_strategy`` (with the evidence); refuses when
    a chosen rule's tuned settings are not the ones in the code, which fuses with the code's."""
    tuned = json.loads((out / "tune.json").read_text())
    written = {}
    for model, choice in tuned["defaults"].items():
        differing = {key: value for key, value in choice.items()
                     if key in _SETTINGS and getattr(*_SETTINGS[key]) != value}
        if differing:
            where = sorted({f"fusion/{_SETTINGS[key][0].__name__.rsplit('.', 1)[-1]}.py" for key in differing})
            raise EdranFusionError(f"{model}'s default {choice['label']} was tuned with {differing}; set these in "
                                   f"{' and '.join(where)} first")
        card_file = directory / f"{model}.json"
        if not card_file.is_file():
            raise EdranFusionError(f"no card {card_file}")
        card = json.loads(card_file.read_text())
        card["default_strategy"] = choice["strategy"]
        card["default_strategy_basis"] = {
            "chosen_by": "evaluation/study.py tune on training series only (validation never used)",
            "pairs_per_task": tuned["pairs_per_task"], "beats_both_pixel_baselines": choice["beats_both_baselines"],
            "beats_its_pixel_control": choice["beats_pixel_control"]}
        with atomic_output(card_file) as temporary:
            temporary.write_text(json.dumps(card, indent=2) + "\n")
        written[model] = choice["strategy"]
    return written


def adopt_head(evidence: Path, model: str, directory: Path) -> dict:
    """Make the learned head ``model``'s default if, on a training series its held-out run was not trained on
    (``evidence``: that run's ``edranfusion evaluate ... --baselines`` report, scoring the current default too),
    it beats both pixel baselines on more target metrics than the current default does. The training pairs of
    ``tune`` cannot judge a head trained on them; this rule is applied before any validation score."""
    card_file = directory / f"{model}.json"
    if not card_file.is_file():
        raise EdranFusionError(f"no card {card_file}")
    card = json.loads(card_file.read_text())
    report = json.loads((evidence / "metrics.json").read_text())
    rows, current = report["rows"], card_default_strategy(card)
    missing = {LEARNED_STRATEGY, current, "pixel-average", "pixel-max"} - {row["method"] for row in rows}
    if missing:
        raise EdranFusionError(f"{evidence} does not score {', '.join(sorted(missing))}; evaluate with --strategy "
                               f"{LEARNED_STRATEGY},{current} --baselines")
    wins = {strategy: beats_both_baselines(rows, strategy) for strategy in (LEARNED_STRATEGY, current)}
    adopted = len(wins[LEARNED_STRATEGY]) > len(wins[current])
    if adopted:
        card["default_strategy"] = LEARNED_STRATEGY
        card["default_strategy_basis"] = {
            "chosen_by": "evaluation/study.py adopt-head: a head trained without these training series, scored on "
                         "them (validation never used); the shipped head was then trained on all training series",
            "evidence_pairs": report["settings"]["pairs"], "beats_both_pixel_baselines": wins}
        with atomic_output(card_file) as temporary:
            temporary.write_text(json.dumps(card, indent=2) + "\n")
    return {"model": model, "adopted": adopted, "beats_both_pixel_baselines": wins}


def score(data: Path, out: Path, pairs: int, montage: int = 2, pixel_heads: Path | None = None) -> dict:
    """The validation series, scored once with the tuned rules; writes score.json, comparison.md, figures.

    ``pixel_heads``: a folder of ``<task model>.pt`` weight networks trained on pixels (``fusion_trainer
    --on-pixels``), scored as ``pixel-head``: the learned head's control trained without the encoder."""
    tuned = json.loads((out / "tune.json").read_text())
    chosen = tuned["chosen"]
    _set_windows({**chosen["two-scale"], **chosen["spatial-sfnn"], **chosen[GUIDED_STRATEGY],
                  **chosen[ANCHORED_STRATEGY]})
    rules = ["spatial-sfnn", chosen["activity"]["strategy"], "two-scale", GUIDED_STRATEGY, ANCHORED_STRATEGY]
    if all(has_fusion_head(model) for model in TASKS.values()):
        rules.append(LEARNED_STRATEGY)
    sweep = [f"activity-p{p:g}" for p in P_SWEEP]
    rows, montages = [], {}
    for task, model in TASKS.items():
        latent = latent_methods(model, ["sfnn-max", *rules, *[s for s in sweep if s not in rules]])
        # p = 0 on pixels is the pixel average itself, scored once as a baseline.
        pixel = [Method(f"pixel-{s}", pixel_control(s, model))
                 for s in [*rules[1:], *[s for s in sweep[1:] if s not in rules]]]
        baselines = [Method(f"pixel-{k}", pixel_baseline(k)) for k in ("average", "max")]
        if pixel_heads is not None and LEARNED_STRATEGY in rules:
            baselines.append(Method(PIXEL_HEAD, pixel_head(str(pixel_heads / f"{model}.pt"))))
        task_rows, shown = _score(data, task, task_pairs(data, task, True, pairs), latent + pixel + baselines,
                                  montage)
        rows += task_rows
        keep = {"MRI", task.split("-", maxsplit=1)[0], "sfnn-max", *rules, *[f"pixel-{r}" for r in rules], "pixel-max"}
        montages[task] = [MontageRow(r.name, [c for c in r.columns if c[0] in keep]) for r in shown]
    result = {"pairs_per_task": pairs, "chosen": chosen, "rules": rules, "rows": rows}
    (out / "score.json").write_text(json.dumps(result, indent=1) + "\n")
    write_tables(out, rows, rules, {model: default_strategy_of(model) for model in TASKS.values()})
    for task, shown in montages.items():
        if shown:
            write_montage(shown, out / f"montage_{TASKS[task]}.png")
    tradeoff_figure(rows, rules, out / "tradeoff.png")
    stroke_montage(out, rules)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m EdranFusionLib.evaluation.study")
    parser.add_argument("phase", choices=("tune", "score", "apply", "adopt-head"),
                        help="apply: write tune.json's default strategies into the cards in --directory; "
                             "adopt-head: make the learned head --model's default on --evidence")
    parser.add_argument("--data", type=Path, default=None, help="tune, score: the harvard folder")
    parser.add_argument("--out", type=Path, default=None, help="tune, score, apply: the study folder")
    parser.add_argument("--evidence", type=Path, default=None,
                        help="adopt-head: evaluate report of a head run holding out a training series")
    parser.add_argument("--model", default=None, help="adopt-head: the task model")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per task")
    parser.add_argument("--montage", type=int, default=2, help="validation pairs per task in the montages")
    parser.add_argument("--pixel-heads", type=Path, default=None,
                        help="score: folder of <task model>.pt weight networks trained on pixels (the learned "
                             "head's trained control)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--directory", type=Path, default=None, help="apply: models folder (EdranFusionLib/weights)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    def work() -> int:
        if args.phase == "adopt-head":
            if args.evidence is None or args.model is None:
                raise EdranFusionError("adopt-head needs --evidence (an evaluate report folder) and --model")
            print(json.dumps(adopt_head(args.evidence, args.model, args.directory or WEIGHTS_DIR), indent=1))
            return 0
        if args.out is None:
            raise EdranFusionError(f"{args.phase} needs --out (the study folder)")
        if args.phase != "apply" and args.data is None:
            raise EdranFusionError(f"{args.phase} needs --data (the harvard folder)")
        if args.phase == "tune":
            result = tune(args.data, args.out, args.pairs)
            print(json.dumps({"chosen": result["chosen"], "defaults": result["defaults"]}, indent=1))
        elif args.phase == "apply":
            print(json.dumps(apply_defaults(args.out, args.directory or WEIGHTS_DIR), indent=1))
        else:
            score(args.data, args.out, args.pairs, args.montage, args.pixel_heads)
            print((args.out / "comparison.md").read_text())
        return 0

    return exit_status_of(work)


if __name__ == "__main__":
    sys.exit(main())
