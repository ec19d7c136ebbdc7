"""The evaluate command: methods, pair selection, report files, tables and user errors (untrained model)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import blob_image
from PIL import Image

from EdranFusionLib.commands.cli import main
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.evaluation.evaluate import markdown_table, pixel_baseline, select_pairs, summarise
from EdranFusionLib.evaluation.metrics import METRICS, fusion_metrics
from EdranFusionLib.evaluation.montage import MontageRow, build_montage, zoom_box
from EdranFusionLib.fusion.color import luminance

NAMES = ("16003.png", "16004.png", "21001.png", "21002.png")


@pytest.fixture()
def pair_folders(tmp_path: Path) -> tuple[Path, Path]:
    """Gray A (MRI-like) and colour B (SPECT-like) folders of 64x64 pairs named <series><slice>."""
    a_dir, b_dir = tmp_path / "MRI", tmp_path / "SPECT"
    a_dir.mkdir()
    b_dir.mkdir()
    for index, name in enumerate(NAMES):
        Image.fromarray(blob_image((64, 64), index)).save(a_dir / name)
        colour = np.stack([blob_image((64, 64), 10 + index + k) for k in range(3)], axis=-1)
        Image.fromarray(colour).save(b_dir / name)
    Image.fromarray(blob_image((64, 64), 99)).save(a_dir / "99001.png")  # unpaired: ignored
    return a_dir, b_dir


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_models_strategies_and_baselines(pair_folders, model_path, tmp_path, capsys):
    a_dir, b_dir = pair_folders
    out = tmp_path / "report"
    code = main(["evaluate", str(a_dir), str(b_dir), "--model", str(model_path), "--strategy", "sfnn-max,fer",
                 "--baselines", "--out", str(out), "--montage-pairs", "2", "--quiet"])
    assert code == 0
    methods = ["sfnn-max", "fer", "pixel-average", "pixel-max"]
    printed = capsys.readouterr().out
    assert "4 pairs" in printed and all(method in printed for method in methods)

    rows = _read_csv(out / "metrics.csv")
    assert [(r["pair"], r["method"]) for r in rows] == [(n, m) for n in NAMES for m in methods]
    assert set(rows[0]) == {"pair", "method", *METRICS}

    report = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    assert list(report["summary"]) == methods
    psnr_fer = [float(r["PSNR"]) for r in rows if r["method"] == "fer"]
    assert report["summary"]["fer"]["PSNR"]["mean"] == pytest.approx(np.mean(psnr_fer))
    assert report["summary"]["fer"]["PSNR"]["std"] == pytest.approx(np.std(psnr_fer))
    assert report["settings"]["pairs"] == list(NAMES)

    table = (out / "summary.md").read_text().splitlines()
    assert table[0].startswith("| method | PSNR | SSIM |") and len(table) == 2 + len(methods)
    with Image.open(out / "montage.png") as montage:
        assert montage.format == "PNG"
        assert montage.width == 4 + (2 + len(methods)) * (160 + 4)  # A, B and one column per method


def test_pixel_baselines_match_their_definition(pair_folders, tmp_path):
    a_dir, b_dir = pair_folders
    a = np.asarray(Image.open(a_dir / NAMES[0]))
    b = np.asarray(Image.open(b_dir / NAMES[0]))
    other = np.asarray(Image.open(a_dir / NAMES[1]))
    assert np.array_equal(pixel_baseline("max")(NAMES[0], a, other), np.maximum(a, other))
    average = pixel_baseline("average")(NAMES[0], a, other)
    assert np.abs(average - (a.astype(np.float64) + other) / 2).max() <= 0.5
    colour = pixel_baseline("average")(NAMES[0], a, b)
    assert colour.shape == b.shape and colour.dtype == np.uint8
    # Luminance is the average of the sources' luminance, up to 8-bit rounding of the RGB result, wherever
    # putting B's chroma back does not leave the RGB gamut.
    in_gamut = ((colour > 0) & (colour < 255)).all(axis=-1)
    assert in_gamut.mean() > 0.5
    assert np.abs(luminance(colour) - (a + luminance(b)) / 2)[in_gamut].max() < 1.0


def test_fused_folder_and_series_selection(pair_folders, tmp_path):
    a_dir, b_dir = pair_folders
    fused_dir = tmp_path / "elsewhere"
    fused_dir.mkdir()
    for name in NAMES:
        a, b = np.asarray(Image.open(a_dir / name)), np.asarray(Image.open(b_dir / name))
        Image.fromarray(pixel_baseline("max")(name, a, b)).save(fused_dir / name)
    out = tmp_path / "report"
    assert main(["evaluate", str(a_dir), str(b_dir), "--fused", f"theirs={fused_dir}", "--baselines",
                 "--series", "21", "--out", str(out), "--quiet"]) == 0
    rows = _read_csv(out / "metrics.csv")
    assert {r["pair"] for r in rows} == {"21001.png", "21002.png"}
    assert select_pairs(str(a_dir), str(b_dir), every=3) == [NAMES[0], NAMES[3]]
    theirs = {r["pair"]: r for r in rows if r["method"] == "theirs"}
    ours = {r["pair"]: r for r in rows if r["method"] == "pixel-max"}
    for name in theirs:  # a PNG round trip of the same image scores the same
        assert all(theirs[name][m] == ours[name][m] for m in METRICS)


@pytest.mark.parametrize("record", [{"val_series": ["16"]}, {"name": "card", "split": {"val_series": [16]}},
                                    {"name": "card", "data": {"train_series": ["21"], "val_series": ["16"]}}])
def test_split_file_restricts_to_validation_series(pair_folders, tmp_path, record):
    a_dir, b_dir = pair_folders
    split = tmp_path / "split.json"
    split.write_text(json.dumps(record))
    out = tmp_path / "report"
    assert main(["evaluate", str(a_dir), str(b_dir), "--baselines", "--split", str(split), "--montage-pairs", "0",
                 "--out", str(out), "--quiet"]) == 0
    assert {r["pair"] for r in _read_csv(out / "metrics.csv")} == {"16003.png", "16004.png"}
    assert not (out / "montage.png").exists()


def test_ablation_models_are_labelled(pair_folders, model_path, capsys):
    a_dir, b_dir = pair_folders
    assert main(["evaluate", str(a_dir), str(b_dir), "--model", f"base={model_path}", "--model",
                 f"full={model_path}", "--series", "16", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "base:sfnn-max" in printed and "full:sfnn-max" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "nothing to evaluate"),
        (["--strategy", "fer"], "--strategy needs --model"),
        (["--model", "x.pt", "--strategy", "best"], "unknown strategy 'best'"),
        (["--baselines", "--series", "7"], "no pair"),
        (["--fused", "/nonexistent/folder"], "does not exist"),
        (["--baselines", "--fused", "pixel-max=/tmp"], "both called 'pixel-max'"),
        (["--baselines", "--every", "0"], "--every must be at least 1"),
    ],
)
def test_user_errors_are_one_line(pair_folders, capsys, extra, message):
    a_dir, b_dir = pair_folders
    assert main(["evaluate", str(a_dir), str(b_dir), *extra, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_missing_fused_image_and_foreign_out_folder(pair_folders, tmp_path, capsys):
    a_dir, b_dir = pair_folders
    partial = tmp_path / "partial"
    partial.mkdir()
    Image.open(a_dir / NAMES[0]).save(partial / NAMES[0])
    assert main(["evaluate", str(a_dir), str(b_dir), "--fused", str(partial), "--quiet"]) == 2
    assert "has no image 16004.png" in capsys.readouterr().err
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["evaluate", str(a_dir), str(b_dir), "--baselines", "--out", str(precious), "--quiet"]) == 2
    assert "not an evaluation report" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"


def test_an_unwritable_report_folder_is_refused_before_any_pair_is_scored(pair_folders, tmp_path, capsys,
                                                                          monkeypatch):
    from EdranFusionLib.evaluation import evaluate as evaluation

    def never(*_args, **_kwargs):
        raise AssertionError("pairs were scored before the output folder was checked")

    monkeypatch.setattr(evaluation, "evaluate", never)
    a_dir, b_dir = pair_folders
    missing = tmp_path / "no-such-folder" / "report"
    assert main(["evaluate", str(a_dir), str(b_dir), "--baselines", "--out", str(missing), "--quiet"]) == 2
    assert f"output folder {missing.parent} does not exist" in capsys.readouterr().err


def test_summary_and_markdown_table():
    image = blob_image((64, 64), 1)
    perfect = fusion_metrics(image, image, image)
    worse = fusion_metrics(image // 2, image, image)
    rows = [{"pair": "1001.png", "method": "copy", **perfect}, {"pair": "1001.png", "method": "half", **worse},
            {"pair": "1002.png", "method": "half", **worse}]
    summary = summarise(rows, ["copy", "half"])
    assert summary["copy"]["PSNR"]["mean"] == math.inf and math.isnan(summary["copy"]["PSNR"]["std"])
    assert summary["half"]["SSIM"] == {"mean": pytest.approx(worse["SSIM"]), "std": pytest.approx(0.0), "n": 2}
    table = markdown_table(summary)
    assert "| copy | **inf** | **1.000 ± 0.000** |" in table


def test_montage_zooms_on_the_sources_structure():
    flat = np.zeros((64, 64), dtype=np.uint8)
    detailed = flat.copy()
    detailed[40:56, 8:24] = np.indices((16, 16)).sum(axis=0) % 2 * 255  # a checkerboard patch
    top, left, side = zoom_box(flat, detailed)
    assert side == 16 and abs(top - 40) <= 2 and abs(left - 8) <= 2
    picture = build_montage([MontageRow("1001", [("A", flat), ("B", detailed), ("fused", detailed)])], tile=64)
    assert picture.size == (4 + 3 * 68, 4 + 18 + 64 + 4 + 64 + 8)


def test_a_slab_of_slices_selects_part_of_a_series(pair_folders):
    a_dir, b_dir = pair_folders
    assert select_pairs(str(a_dir), str(b_dir), series="16:4-9,21") == [NAMES[1], NAMES[2], NAMES[3]]
    assert select_pairs(str(a_dir), str(b_dir), series="21:2-2") == [NAMES[3]]
    with pytest.raises(EdranFusionError, match="no pair .* belongs to series 16:5-9"):
        select_pairs(str(a_dir), str(b_dir), series="16:5-9")
    for spec, problem in (("16:9-4", "ends before it starts"), ("16:a-b", "neither a series id")):
        with pytest.raises(EdranFusionError, match=problem):
            select_pairs(str(a_dir), str(b_dir), series=spec)
