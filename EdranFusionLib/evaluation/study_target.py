"""The study's tasks and issue 12's target: what a fusion method must beat, shared by the training-series choice
(study.py) and the validation report (study_report.py)."""

from __future__ import annotations

from ..choices import LEARNED_STRATEGY
from .comparison import TARGET_METRICS, learned_pixel_control, metrics_beaten, paired_comparison, pixel_rule
from .evaluate import Fuse

TASKS = {"CT-MRI": "ct-mri", "SPECT-MRI": "spect-mri", "PET-MRI": "pet-mri"}
# The target: the default beats both pixel baselines on at least 4 of the 5 target metrics, and its own
# pixel-domain control on most of them.
TARGET_WINS = 4


def control_of(label: str, strategy: str) -> str:
    """The method label of a candidate's pixel-domain control: SFNN's and spatial SFNN's softmax over one channel
    is constant, so on pixels they are the pixel average itself."""
    return "pixel-average" if strategy.startswith("sfnn-") or strategy == "spatial-sfnn" else f"pixel-{label}"


def pixel_control(strategy: str, model: str) -> Fuse:
    """The rule's pixel-domain control: the rule on pixels, or for the learned head its own weights on pixels."""
    return learned_pixel_control(model) if strategy == LEARNED_STRATEGY else pixel_rule(strategy)


def beats_both_baselines(task_rows: list[dict], method: str) -> list[str]:
    """Target metrics on which ``method``'s mean beats both pixel average and pixel max."""
    return [m for m in TARGET_METRICS
            if all(paired_comparison(task_rows, method, ref, [m])[m]["mean_diff"] > 0
                   for ref in ("pixel-average", "pixel-max"))]


def beats_its_control(task_rows: list[dict], label: str, strategy: str) -> list[str]:
    """Target metrics on which ``label``'s mean beats its own pixel-domain control's."""
    return metrics_beaten(paired_comparison(task_rows, label, control_of(label, strategy)))
