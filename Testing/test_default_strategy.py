"""Each model's own default strategy (its card's ``default_strategy``, else the paper's sfnn-max): the registry,
the API, the CLI, the evaluate command and the study's choice and its writing into cards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_image

from EdranFusionLib import fuse_images
from EdranFusionLib.choices import DEFAULT_STRATEGY
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.evaluation import study
from EdranFusionLib.evaluation.comparison import TARGET_METRICS
from EdranFusionLib.evaluation.study_target import TASKS
from EdranFusionLib.fusion.pipeline import as_model
from EdranFusionLib.fusion.provenance import from_text_fields
from EdranFusionLib.io.images import read_image_metadata
from EdranFusionLib.io.model_files import save_bundled
from EdranFusionLib.io.user_data import user_models_dir
from EdranFusionLib.io.weights import bundled_models, default_strategy_of
from EdranFusionLib.network.model import EHDRAN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def carded(tmp_path: Path, model: EHDRAN) -> Path:
    """A weights file whose card names ``average`` as its default."""
    return save_bundled(model, "carded", "ct-mri", {"default_strategy": "average"}, tmp_path)


def _set_card(path: Path, **fields) -> None:
    card_file = path.with_suffix(".json")
    card_file.write_text(json.dumps({**json.loads(card_file.read_text()), **fields}))


def test_a_card_names_the_default_and_anything_else_gets_the_papers(carded: Path, model_path: Path):
    assert default_strategy_of(carded) == default_strategy_of(str(carded)) == "average"
    assert default_strategy_of(model_path) == DEFAULT_STRATEGY == "sfnn-max"  # no card beside it
    assert default_strategy_of(EHDRAN()) == DEFAULT_STRATEGY  # a model object has no card
    assert default_strategy_of("") == DEFAULT_STRATEGY  # the Slicer panel before a weights file is chosen
    _set_card(carded, default_strategy="no-such-rule")  # e.g. a card written by a newer version
    assert default_strategy_of(carded) == DEFAULT_STRATEGY
    carded.with_suffix(".json").write_text("{not json")
    assert default_strategy_of(carded) == DEFAULT_STRATEGY


def test_installed_models_are_found_by_name(model: EHDRAN):
    user_models_dir().mkdir(parents=True, exist_ok=True)
    save_bundled(model, "mine", "ct-mri", {"default_strategy": "fl1n"}, user_models_dir())
    try:
        assert default_strategy_of("mine") == "fl1n"
    finally:
        for suffix in (".pt", ".json"):
            (user_models_dir() / f"mine{suffix}").unlink()
    for name, bundled in bundled_models().items():  # every bundled default is a strategy the product knows
        assert default_strategy_of(name) == bundled.card.get("default_strategy", DEFAULT_STRATEGY)


def test_the_api_fuses_with_the_models_default_unless_told(carded: Path):
    a, b = blob_image((40, 48), 1), blob_image((40, 48), 2)
    by_default = fuse_images(a, b, model=carded, precision="fp32")
    np.testing.assert_array_equal(by_default, fuse_images(a, b, model=carded, strategy="average", precision="fp32"))
    assert not np.array_equal(by_default, fuse_images(a, b, model=carded, strategy="max", precision="fp32"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "EdranFusionLib", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300, check=False)


def test_the_cli_says_which_default_it_used_and_records_it(carded: Path, tmp_path: Path):
    from PIL import Image

    for name, seed in (("a.png", 1), ("b.png", 2)):
        Image.fromarray(blob_image((40, 48), seed)).save(tmp_path / name)
    done = _cli("fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "f.png"),
                "--model", str(carded))
    assert done.returncode == 0, done.stderr
    assert f"(strategy average, the default of model {carded};" in done.stdout
    assert from_text_fields(read_image_metadata(tmp_path / "f.png"))["strategy"] == "average"
    listed = json.loads(_cli("models", "--json").stdout)["models"]
    assert all(m["default_strategy"] == default_strategy_of(m["name"]) for m in listed)


def test_evaluate_scores_each_models_default_when_no_strategy_is_given(carded: Path, tmp_path: Path):
    from argparse import Namespace

    from EdranFusionLib.commands.evaluate import methods_from_args

    args = Namespace(model=[f"one={carded}", "two=" + str(carded.with_name("other.pt"))], strategy=None,
                     baselines=False, fused=[], pixel_head=[], device="cpu", precision="fp32")
    save_bundled(EHDRAN().eval(), "other", "ct-mri", {}, carded.parent)
    assert [m.label for m in methods_from_args(args)] == ["one:average", "two:sfnn-max"]


def test_every_default_is_offered_where_strategies_are_listed():
    from EdranFusionLib.choices import STRATEGY_NAMES, strategies_offered

    assert strategies_offered(["activity-p1", "sfnn-max", "nonsense"]) == [*STRATEGY_NAMES, "activity-p1"]
    assert strategies_offered() == list(STRATEGY_NAMES)


def _rows(scores: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Study rows of one pair per task: ``scores[method][task]`` is its five target metrics."""
    return [{"task": task, "pair": "p", "method": method, **dict(zip(TARGET_METRICS, values))}
            for method, per_task in scores.items() for task, values in per_task.items()]


def test_the_study_chooses_per_task_by_wins_then_control_and_general_by_its_worst_task():
    low, high = [0.0] * 5, [1.0] * 5
    three = [1.0, 1.0, 1.0, 0.0, 0.0]
    tasks = list(TASKS)
    scores = {
        "pixel-average": dict.fromkeys(tasks, low), "pixel-max": dict.fromkeys(tasks, low),
        "sfnn-max": dict.fromkeys(tasks, three),  # 3 everywhere; its control is the pixel average
        "guided-pyramid-x": {tasks[0]: low, tasks[1]: high, tasks[2]: high},  # best on two tasks, worst on one
        "pixel-guided-pyramid-x": dict.fromkeys(tasks, low),
        "activity-p1": {tasks[0]: three, tasks[1]: three, tasks[2]: low},
        "pixel-activity-p1": {tasks[0]: high, tasks[1]: high, tasks[2]: high},  # ties sfnn-max, loses to control
    }
    candidates = {"sfnn-max": {"strategy": "sfnn-max"}, "guided-pyramid-x": {"strategy": "guided-pyramid"},
                  "activity-p1": {"strategy": "activity-p1"}}
    defaults = study.choose_defaults(_rows(scores), candidates)
    models = list(TASKS.values())
    assert [defaults[m]["strategy"] for m in models] == ["sfnn-max", "guided-pyramid", "guided-pyramid"]
    assert defaults["general"]["strategy"] == "sfnn-max"  # guided-pyramid's worst task has no win
    assert defaults[models[1]]["beats_both_baselines"][tasks[1]] == list(TARGET_METRICS)


def test_apply_writes_the_defaults_into_cards_and_refuses_settings_the_code_does_not_use(tmp_path: Path,
                                                                                          model: EHDRAN):
    from EdranFusionLib.fusion import guided

    for name in ("ct-mri", "general"):
        save_bundled(model, name, name, {"description": "kept"}, tmp_path)
    choice = {"label": "guided-pyramid-p2w7n3", "strategy": "guided-pyramid", "guided_power": guided.GUIDED_POWER,
              "guided_window": guided.GUIDED_WINDOW, "guided_levels": guided.GUIDED_LEVELS,
              "beats_both_baselines": {"CT-MRI": ["PSNR"]}, "beats_pixel_control": {"CT-MRI": ["SSIM"]}}
    tune = {"pairs_per_task": 6, "defaults": {"ct-mri": choice, "general": {"label": "sfnn-max",
                                                                           "strategy": "sfnn-max",
                                                                           "beats_both_baselines": {},
                                                                           "beats_pixel_control": {}}}}
    (tmp_path / "tune.json").write_text(json.dumps(tune))
    assert study.apply_defaults(tmp_path, tmp_path) == {"ct-mri": "guided-pyramid", "general": "sfnn-max"}
    card = json.loads((tmp_path / "ct-mri.json").read_text())
    assert card["description"] == "kept" and card["default_strategy"] == "guided-pyramid"
    assert card["default_strategy_basis"]["beats_both_pixel_baselines"] == {"CT-MRI": ["PSNR"]}
    assert default_strategy_of(tmp_path / "ct-mri.pt") == "guided-pyramid"
    as_model(tmp_path / "ct-mri.pt")  # the card's sha256 still matches its weights
    choice["guided_window"] = guided.GUIDED_WINDOW + 2
    (tmp_path / "tune.json").write_text(json.dumps(tune))
    with pytest.raises(EdranFusionError, match="guided_window.*set these in fusion/guided.py first"):
        study.apply_defaults(tmp_path, tmp_path)


def test_every_offered_strategy_says_what_it_does_and_whose_it_is():
    from EdranFusionLib.choices import PAPER_STRATEGIES, STRATEGY_NAMES, strategy_description

    for name in STRATEGY_NAMES:
        text = strategy_description(name)
        assert text.startswith(("the paper's", "compared in the paper") if name in PAPER_STRATEGIES
                               else "beyond the paper"), (name, text)
    assert strategy_description("activity-p1.5") == ("beyond the paper: tempered activity weight "
                                                     "|f_a|^1.5 / (|f_a|^1.5 + |f_b|^1.5) per element")
    assert strategy_description("activity-p2").endswith("(the same rule as fer)")
    assert strategy_description("nonsense") == ""


def _evidence(tmp_path: Path, learned_qabf: float) -> Path:
    base = {"PSNR": 15.0, "SSIM": 0.70, "FMI_edge": 0.85, "FSIM": 0.80, "Qabf": 0.50}
    rows = []
    for pair in ("37003.png", "37004.png"):
        rows += [{"pair": pair, "method": "pixel-average", **base}, {"pair": pair, "method": "pixel-max", **base},
                 {"pair": pair, "method": "max-anchored", **base, "PSNR": 15.5, "SSIM": 0.71},
                 {"pair": pair, "method": "learned", **base, "PSNR": 15.5, "SSIM": 0.71, "Qabf": learned_qabf}]
    folder = tmp_path / f"evidence-{learned_qabf}"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"settings": {"pairs": ["37003.png", "37004.png"]},
                                                     "rows": rows}))
    return folder


def test_the_head_becomes_a_default_only_with_more_wins_on_held_out_training_series(tmp_path: Path) -> None:
    card = {"name": "ct-mri", "task": "ct-mri", "default_strategy": "max-anchored"}
    (tmp_path / "ct-mri.json").write_text(json.dumps(card))
    tie = study.adopt_head(_evidence(tmp_path, 0.50), "ct-mri", tmp_path)
    assert not tie["adopted"] and json.loads((tmp_path / "ct-mri.json").read_text()) == card
    more = study.adopt_head(_evidence(tmp_path, 0.55), "ct-mri", tmp_path)
    assert more["adopted"] and more["beats_both_pixel_baselines"]["learned"] == ["PSNR", "SSIM", "Qabf"]
    written = json.loads((tmp_path / "ct-mri.json").read_text())
    assert written["default_strategy"] == "learned"
    assert written["default_strategy_basis"]["beats_both_pixel_baselines"]["max-anchored"] == ["PSNR", "SSIM"]
    assert written["default_strategy_basis"]["evidence_pairs"] == ["37003.png", "37004.png"]


def test_adopt_head_refuses_evidence_that_does_not_score_the_current_default(tmp_path: Path) -> None:
    folder = _evidence(tmp_path, 0.55)
    rows = [r for r in json.loads((folder / "metrics.json").read_text())["rows"] if r["method"] != "max-anchored"]
    (folder / "metrics.json").write_text(json.dumps({"settings": {"pairs": []}, "rows": rows}))
    (tmp_path / "ct-mri.json").write_text(json.dumps({"name": "ct-mri", "default_strategy": "max-anchored"}))
    with pytest.raises(EdranFusionError, match="does not score max-anchored"):
        study.adopt_head(folder, "ct-mri", tmp_path)
