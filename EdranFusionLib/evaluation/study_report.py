"""What the study's validation run writes: comparison.md (the target summary, the defaults' verdict, per task the
means and the paired comparisons), the PSNR-Qabf trade-off figure and the stroke T2 + FLAIR montage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..choices import LEARNED_STRATEGY
from .comparison import TARGET_METRICS, comparison_markdown, latent_methods, metrics_beaten, paired_comparison
from .evaluate import Method
from .montage import MontageRow, write_montage
from .study_target import TARGET_WINS, TASKS, beats_both_baselines, beats_its_control, pixel_control

P_SWEEP = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0)
REFERENCES = ("pixel-average", "pixel-max", "sfnn-max")
PIXEL_HEAD = "pixel-head"
# Mean tables also show PSNR_joint (not a target metric): the target's PSNR rewards leaning toward one source.
MEAN_COLUMNS = (*TARGET_METRICS, "PSNR_joint")


def target_summary(rows: list[dict], methods: Sequence[str]) -> list[str]:
    """Markdown lines: per method and task, the target metrics on which it beats both pixel baselines."""
    lines = ["## Target: metrics beating both pixel average and pixel max", "",
             "| method | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for method in methods:
        cells = []
        for task in TASKS:
            beaten = beats_both_baselines([r for r in rows if r["task"] == task], method)
            cells.append(f"{len(beaten)} ({', '.join(beaten) or '-'})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def defaults_summary(rows: list[dict], defaults: dict[str, str]) -> list[str]:
    """Markdown lines: each task model's default strategy (its card's, chosen on training series) against the
    target on validation. The learned head's control is the stricter of its two: it must beat both its own weights
    on the pixel candidates and, when scored, the same head trained on pixels."""
    lines = ["## Defaults (the bundled cards', chosen on training series) on the validation series", "",
             "| model | default | beats both pixel baselines on | beats its pixel control on | target met |",
             "|---|---|---|---|---|"]
    for task, model in TASKS.items():
        if model not in defaults:
            continue
        task_rows = [r for r in rows if r["task"] == task]
        label = defaults[model]
        both = beats_both_baselines(task_rows, label)
        control = beats_its_control(task_rows, label, label)
        if label == LEARNED_STRATEGY and any(r["method"] == PIXEL_HEAD for r in task_rows):
            trained = metrics_beaten(paired_comparison(task_rows, label, PIXEL_HEAD))
            control = [m for m in control if m in trained]
        met = "yes" if len(both) >= TARGET_WINS and len(control) > len(TARGET_METRICS) / 2 else "no"
        lines.append(f"| {model} | {label} | {len(both)} ({', '.join(both) or '-'}) | "
                     f"{len(control)} ({', '.join(control) or '-'}) | {met} |")
    return [*lines, ""]


def write_tables(out: Path, rows: list[dict], rules: Sequence[str], defaults: dict[str, str] | None = None) -> None:
    """comparison.md: the target summary and the defaults' verdict, then per task the mean of every method and the
    paired comparisons."""
    lines = target_summary(rows, ["sfnn-max", *rules]) + defaults_summary(rows, defaults or {})
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        methods = list(dict.fromkeys(r["method"] for r in task_rows))
        lines += [f"## {task} ({len({r['pair'] for r in task_rows})} validation pairs)", "",
                  "| method | " + " | ".join(MEAN_COLUMNS) + " |", "|---|" + "---:|" * len(MEAN_COLUMNS)]
        for method in methods:
            means = [np.mean([r[m] for r in task_rows if r["method"] == method]) for m in MEAN_COLUMNS]
            lines.append(f"| {method} | " + " | ".join(f"{v:.{2 if m.startswith('PSNR') else 3}f}"
                                                        for m, v in zip(MEAN_COLUMNS, means)) + " |")
        lines += ["", "Paired: wins/pairs, mean difference [bootstrap 95% interval]", ""]
        shown = [*rules, *[f"pixel-{r}" for r in rules[1:]]]
        # Each rule against its own pixel-domain control (spatial-sfnn's is the pixel average, in REFERENCES).
        pairs_of_controls = [(rule, f"pixel-{rule}") for rule in rules[1:]]
        if any(r["method"] == PIXEL_HEAD for r in task_rows):
            pairs_of_controls.append((LEARNED_STRATEGY, PIXEL_HEAD))
        controls = "\n".join(line for rule, control in pairs_of_controls
                             for line in comparison_markdown(task_rows, [rule], [control]).splitlines()[2:])
        lines += [comparison_markdown(task_rows, shown, REFERENCES).rstrip(), controls, ""]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")


def tradeoff_figure(rows: list[dict], rules: Sequence[str], path: Path) -> None:
    """PSNR against Qabf per task: the p sweep on latents and on pixels as curves, the other methods as points."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 3.8))
    for axis, task in zip(axes, TASKS):
        task_rows = [r for r in rows if r["task"] == task]

        def mean(method: str, metric: str, task_rows: list[dict] = task_rows) -> float:
            return float(np.mean([r[metric] for r in task_rows if r["method"] == method]))

        for prefix, style, label in (("", "o-", "activity-p on latents"), ("pixel-", "s--", "activity-p on pixels")):
            names = [f"{prefix}activity-p{p:g}" if prefix == "" or p > 0 else "pixel-average" for p in P_SWEEP]
            axis.plot([mean(n, "Qabf") for n in names], [mean(n, "PSNR") for n in names], style, label=label)
            for p, n in zip(P_SWEEP, names):
                axis.annotate(f"{p:g}", (mean(n, "Qabf"), mean(n, "PSNR")), fontsize=7)
        points = ["sfnn-max", *[r for r in rules if r != rules[1]], "pixel-two-scale", "pixel-average", "pixel-max"]
        points += [f"pixel-{LEARNED_STRATEGY}"] if LEARNED_STRATEGY in rules else []
        for method in points:
            axis.plot(mean(method, "Qabf"), mean(method, "PSNR"), "^", label=method)
        axis.set(title=task, xlabel="Qabf", ylabel="PSNR (dB)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def stroke_montage(out: Path, rules: Sequence[str], model: str = "general") -> Path:
    """Two axial slices of the bundled stroke T2 + FLAIR, each normalised as the fuser normalises the volume
    and shown as 8-bit, fused by sfnn-max, the rules and their pixel controls (for checking halos by eye)."""
    import SimpleITK as sitk

    from ..fusion.intensity import window_for
    from ..io.volumes import read_volume

    folder = Path(__file__).resolve().parents[1] / "sample_data" / "stroke"
    stacks = []
    for name in ("T2.nii.gz", "FLAIR.nii.gz"):
        data = sitk.GetArrayFromImage(read_volume(folder / name))
        stacks.append(np.rint(window_for(data, name).normalise(data) * 255).astype(np.uint8))
    methods = latent_methods(model, ["sfnn-max", *rules]) + [Method(f"pixel-{r}", pixel_control(r, model))
                                                            for r in rules[1:]]
    rows = []
    for index in (len(stacks[0]) // 2, int(len(stacks[0]) * 0.62)):
        a, b = stacks[0][index], stacks[1][index]
        rows.append(MontageRow(f"slice {index}", [("T2", a), ("FLAIR", b)]
                               + [(m.label, m.fuse(f"slice {index}", a, b)) for m in methods]))
    path = out / "montage_stroke.png"
    write_montage(rows, path)
    return path
