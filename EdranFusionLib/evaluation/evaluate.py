"""`evaluate` sub-command: fusion metrics of a test set for several methods, as tables, CSV/JSON and a montage.

A method is a model with a fusion strategy (``--model`` x ``--strategy``, e.g. the paper's Table 2 strategies or
its Table 4 ablation models), the element-wise average or max of the source images (``--baselines``), or a
folder of images fused elsewhere (``--fused``). Every method is scored on every pair with every metric of
:mod:`EdranFusionLib.metrics`; the summary is mean +- standard deviation over the pairs.

Report folder (``--out``): ``summary.md`` (Markdown table), ``metrics.csv`` (one row per pair and method),
``metrics.json`` (rows, summary and settings) and ``montage.png``; written as a whole, atomically.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdranFusionError
from ..fusion.color import gray_levels, is_colour, recolour
from ..io import images
from ..io.atomic import atomic_output, check_output_location
from ..training.datasets import SeriesSelection, recorded_val_series
from .metrics import METRICS, fusion_metrics
from .montage import MontageRow, write_montage

Fuse = Callable[[str, np.ndarray, np.ndarray], np.ndarray]
_TWO_DECIMALS = {"PSNR", "SD", "SF", "PSNR_joint"}
_REPORT_MARKER = "metrics.json"


@dataclass(frozen=True)
class Method:
    """A named way to get the fused image of a pair (name, A, B) -> uint8 image."""

    label: str
    fuse: Fuse


# -- methods ------------------------------------------------------------------------------------------------------
def pixel_baseline(kind: str) -> Fuse:
    """Element-wise average or max of the sources' luminance. As in fusion, the colour (SPECT/PET) source gives
    the result its chroma (the first one if both are colour)."""
    combine = {"average": lambda x, y: (x + y) / 2, "max": np.maximum}[kind]

    def fuse(_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ya, yb = gray_levels(a), gray_levels(b)
        fused = combine(ya, yb)
        colour = next((x for x in (a, b) if is_colour(x)), None)
        return np.clip(np.rint(fused), 0, 255).astype(np.uint8) if colour is None else recolour(fused, colour)

    return fuse


def model_method(model: str, strategy: str, device: str, precision: str) -> Fuse:
    from ..fusion.pipeline import as_model, fuse_images  # torch is imported only when a model is used

    network = as_model(model)

    def fuse(_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return fuse_images(a, b, model=network, strategy=strategy, device=device, precision=precision)

    return fuse


def folder_method(folder: Path) -> Fuse:
    if not folder.is_dir():
        raise EdranFusionError(f"fused folder {folder} does not exist; check --fused")

    def fuse(name: str, a: np.ndarray, _b: np.ndarray) -> np.ndarray:
        path = folder / name
        if not path.is_file():
            raise EdranFusionError(f"fused folder {folder} has no image {name}; it needs one per pair")
        fused = images.read_image(path)
        if fused.shape[:2] != a.shape[:2]:
            raise EdranFusionError(f"fused image {path} is {fused.shape[1]}x{fused.shape[0]}, "
                                   f"its sources {a.shape[1]}x{a.shape[0]}; give fused images of the sources' size")
        return fused

    return fuse


# -- pairs --------------------------------------------------------------------------------------------------------
def _split_series(path: Path) -> set[str]:
    """Validation series from a training run's split.json, or a model card (under "data" or "split")."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EdranFusionError(f"cannot read split file {path} ({error}); give a split.json or model card") from error
    series = recorded_val_series(record)
    if series is not None:
        return series
    raise EdranFusionError(f"{path} records no 'val_series'; give the split.json of a training run")


def select_pairs(a_dir: str, b_dir: str, series: str | None = None, split: str | None = None,
                 every: int = 1) -> list[str]:
    """Pair file names in both folders, restricted to the given series (explicit, or a run's validation split),
    then thinned to every ``every``-th name."""
    if every < 1:
        raise EdranFusionError(f"--every must be at least 1 (got {every})")
    return _pairs_in_series(a_dir, b_dir, series, split)[::every]


def _pairs_in_series(a_dir: str, b_dir: str, series: str | None, split: str | None) -> list[str]:
    names = images.common_names(a_dir, b_dir)
    selections = [SeriesSelection(spec) for spec in (series, split and ",".join(_split_series(Path(split)))) if spec]
    if not selections:
        return names
    chosen = [name for name in names if all(s.holds(Path(name).stem, Path(a_dir)) for s in selections)]
    if not chosen:
        wanted = " and ".join(", ".join(s.items()) for s in selections)
        raise EdranFusionError(f"no pair in {a_dir} belongs to series {wanted}")
    return chosen


# -- scoring and summaries ----------------------------------------------------------------------------------------
def summarise(rows: Sequence[dict], methods: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method and metric: mean, population standard deviation and count over the pairs."""
    summary = {}
    for method in methods:
        values = [row for row in rows if row["method"] == method]
        summary[method] = {}
        for metric in METRICS:
            column = np.array([row[metric] for row in values], dtype=np.float64)
            finite = bool(np.isfinite(column).all())
            summary[method][metric] = {
                "mean": float(column.mean()) if finite else float(column[~np.isnan(column)].mean()),
                "std": float(column.std()) if finite else math.nan,
                "n": len(column),
            }
    return summary


def _cell(metric: str, stats: dict[str, float]) -> str:
    digits = 2 if metric in _TWO_DECIMALS else 3
    mean, std = stats["mean"], stats["std"]
    if math.isinf(mean):
        return "inf"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """Methods as rows, metrics as columns, mean ± std; the best mean of each column in bold (all are
    higher-is-better) when several methods are compared."""
    metrics = list(METRICS)
    best = {m: max(summary[method][m]["mean"] for method in summary) for m in metrics}
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for method, stats in summary.items():
        cells = []
        for metric in metrics:
            text = _cell(metric, stats[metric])
            bold = len(summary) > 1 and stats[metric]["mean"] == best[metric]
            cells.append(f"**{text}**" if bold else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary for a terminal: aligned columns, mean ± std."""
    metrics = list(METRICS)
    rows = [["method", *metrics]] + [[method] + [_cell(m, stats[m]) for m in metrics]
                                     for method, stats in summary.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _montage_names(names: Sequence[str], count: int) -> set[str]:
    """``count`` pairs spread evenly over the (sorted) test set."""
    if count <= 0:
        return set()
    picks = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return {names[i] for i in picks}


def evaluate(a_dir: str, b_dir: str, names: Sequence[str], methods: Sequence[Method], *,
             montage_pairs: int = 3, progress: Callable[[float], None] | None = None
             ) -> tuple[list[dict], list[MontageRow]]:
    """Fuse and score every pair with every method; returns the per-pair rows and the montage rows."""
    rows, montage_rows = [], []
    shown = _montage_names(names, montage_pairs)
    total = len(names) * len(methods)
    for index, name in enumerate(names):
        a, b = images.read_image(Path(a_dir) / name), images.read_image(Path(b_dir) / name)
        for image, side in ((a, "A"), (b, "B")):
            if image.dtype != np.uint8:
                raise EdranFusionError(f"{side} image {name} is not 8-bit; the metrics are defined on 0..255 images")
        columns = [(Path(a_dir).name or "A", a), (Path(b_dir).name or "B", b)]
        for position, method in enumerate(methods):
            fused = method.fuse(name, a, b)
            rows.append({"pair": name, "method": method.label, **fusion_metrics(fused, a, b)})
            columns.append((method.label, fused))
            if progress:
                progress((index * len(methods) + position + 1) / total)
        if name in shown:
            montage_rows.append(MontageRow(Path(name).stem, columns))
    return rows, montage_rows


def check_report_folder(out: Path) -> None:
    """Refuse, before any pair is scored, a report folder that could not be written or would replace other files."""
    check_output_location(out)
    if out.exists() and not (out / _REPORT_MARKER).is_file():
        raise EdranFusionError(f"{out} exists and is not an evaluation report; choose a new --out folder")


def write_report(out: Path, rows: list[dict], summary: dict, montage_rows: list[MontageRow], settings: dict) -> None:
    """The report folder, published as a whole; an existing folder is replaced only if it is an earlier report."""
    check_report_folder(out)
    with atomic_output(out, directory=True) as folder:
        (folder / "summary.md").write_text(markdown_table(summary))
        with open(folder / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["pair", "method", *METRICS])
            writer.writeheader()
            writer.writerows(rows)
        report = {"settings": settings, "metrics": {name: vars(info) for name, info in METRICS.items()},
                  "summary": summary, "rows": rows}
        # Strict JSON has no inf/nan: write them as null.
        (folder / _REPORT_MARKER).write_text(json.dumps(_json_safe(report), indent=1) + "\n")
        if montage_rows:
            write_montage(montage_rows, folder / "montage.png")


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value
