"""Comparison tools for fusion rules: pixel-domain controls, paired wins and bootstrap intervals."""

import numpy as np
import pytest

from EdranFusionLib.evaluation.comparison import comparison_markdown, metrics_beaten, paired_comparison, pixel_rule
from EdranFusionLib.evaluation.evaluate import pixel_baseline


def _rows(differences: list[float]) -> list[dict]:
    rows = []
    for index, diff in enumerate(differences):
        base = {"PSNR": 30.0 + index, "SSIM": 0.5, "FMI_edge": 0.4, "FSIM": 0.8, "Qabf": 0.5}
        rows.append({"pair": f"{index}.png", "method": "ref", **base})
        rows.append({"pair": f"{index}.png", "method": "new", **{k: v + diff for k, v in base.items()}})
    return rows


def test_paired_comparison_counts_wins_and_brackets_the_mean_difference():
    stats = paired_comparison(_rows([0.1, 0.2, -0.05, 0.3]), "new", "ref")["PSNR"]
    assert stats["wins"] == 3 and stats["pairs"] == 4
    assert stats["mean_diff"] == pytest.approx(0.1375)
    assert -0.05 <= stats["ci_low"] < stats["mean_diff"] < stats["ci_high"] <= 0.3


def test_equal_methods_win_nowhere_and_are_not_better():
    stats = paired_comparison(_rows([0.0, 0.0]), "new", "ref")
    assert all(s["wins"] == 0 and s["ci_low"] == s["ci_high"] == 0 for s in stats.values())
    assert metrics_beaten(stats) == []
    assert "| new | ref | 0/2" in comparison_markdown(_rows([0.0, 0.0]), ["new"], ["ref"])


def test_pixel_rules_match_the_pixel_baselines_and_keep_colour():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    colour = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for a, b in ((gray, gray[::-1].copy()), (gray, colour)):
        for kind in ("average", "max"):
            ours, theirs = pixel_rule(kind)("x", a, b), pixel_baseline(kind)("x", a, b)
            assert ours.shape == theirs.shape and np.abs(ours.astype(int) - theirs).max() <= 1
    high = pixel_rule("activity-p8")("x", gray, gray[::-1].copy())
    assert np.abs(high.astype(int) - np.maximum(gray, gray[::-1])).mean() < 3


def test_target_summary_counts_metrics_beating_both_pixel_baselines_per_task() -> None:
    from EdranFusionLib.evaluation.study_report import target_summary
    from EdranFusionLib.evaluation.study_target import TASKS, beats_both_baselines

    rows = []
    for task in TASKS:
        for pair in ("p1", "p2"):
            base = {"PSNR": 15.0, "SSIM": 0.70, "FMI_edge": 0.85, "FSIM": 0.80, "Qabf": 0.50}
            rows.append({"task": task, "pair": pair, "method": "pixel-average", **base})
            rows.append({"task": task, "pair": pair, "method": "pixel-max", **base, "Qabf": 0.60})
            # Better than both on PSNR and SSIM, between them on Qabf, worse on FSIM, equal on FMI_edge.
            rows.append({"task": task, "pair": pair, "method": "learned", **base, "PSNR": 15.5, "SSIM": 0.72,
                         "FSIM": 0.79, "Qabf": 0.55})
    assert beats_both_baselines([r for r in rows if r["task"] == "CT-MRI"], "learned") == ["PSNR", "SSIM"]
    table = "\n".join(target_summary(rows, ["learned"]))
    assert "| learned | 2 (PSNR, SSIM) | 2 (PSNR, SSIM) | 2 (PSNR, SSIM) |" in table


def test_a_learned_default_must_beat_both_of_its_pixel_controls() -> None:
    from EdranFusionLib.evaluation.study_report import PIXEL_HEAD, defaults_summary

    base = {"PSNR": 15.0, "SSIM": 0.70, "FMI_edge": 0.85, "FSIM": 0.80, "Qabf": 0.50}
    rows = []
    for pair in ("p1", "p2"):
        rows += [{"task": "CT-MRI", "pair": pair, "method": "pixel-average", **base},
                 {"task": "CT-MRI", "pair": pair, "method": "pixel-max", **base},
                 # Beats everything but the trained pixel head on FSIM and Qabf.
                 {"task": "CT-MRI", "pair": pair, "method": "learned",
                  **{k: v + 0.01 for k, v in base.items()}},
                 {"task": "CT-MRI", "pair": pair, "method": "pixel-learned", **base},
                 {"task": "CT-MRI", "pair": pair, "method": PIXEL_HEAD, **base, "FSIM": 0.9, "Qabf": 0.6}]
    line = next(x for x in defaults_summary(rows, {"ct-mri": "learned"}) if x.startswith("| ct-mri"))
    assert line == ("| ct-mri | learned | 5 (PSNR, SSIM, FMI_edge, FSIM, Qabf) | 3 (PSNR, SSIM, FMI_edge) | yes |")
    without_head = [r for r in rows if r["method"] != PIXEL_HEAD]
    assert "| 5 (PSNR, SSIM, FMI_edge, FSIM, Qabf) | yes |" in defaults_summary(without_head, {"ct-mri": "learned"})[4]
