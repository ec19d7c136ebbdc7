"""What users choose from, and the defaults: models, fusion strategies, devices and precisions.

Torch-free, so the CLI's help and the Slicer panel can list the choices without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_MODEL = "general"
KNOWN_MODELS = ("ct-mri", "spect-mri", "pet-mri", "general")
PAPER_STRATEGIES = ("sfnn-max", "sfnn-mean", "sfnn-sum", "sfnn-identity", "fer", "fl1n", "average", "max")
# Beyond the paper (fusion/spatial.py): weights that vary per pixel. The tempered activity family
# ``activity-p<P>`` (0 <= P <= 8) is accepted by name by the API and the evaluate command; P = 1 is ``fl1n`` and
# P = 2 (chosen on training series, docs/RESULTS.md) is ``fer`` itself, so no member is listed twice here.
SPATIAL_STRATEGIES = ("spatial-sfnn", "two-scale")
# The paper's element-wise comparison rules are members of that family: FER squares, FL1N takes |f|.
ACTIVITY_MEMBERS = {"fer": 2.0, "fl1n": 1.0}
# Parameter-free rules on two latents (fusion/rules.py).
LATENT_RULES = PAPER_STRATEGIES + SPATIAL_STRATEGIES
# Beyond the paper: the learned stage-2 head stored in the model's weights file (network/fusion_head.py).
LEARNED_STRATEGY = "learned"
# Beyond the paper: the latents weigh, the sources' own pyramids are fused (fusion/guided.py).
GUIDED_STRATEGY = "guided-pyramid"
# Beyond the paper: the decoded activity fusion pulled toward the sources' pixel maximum (fusion/anchored.py).
ANCHORED_STRATEGY = "max-anchored"
# Strategies that read the source images as well as their latents.
SOURCE_STRATEGIES = (GUIDED_STRATEGY, ANCHORED_STRATEGY, LEARNED_STRATEGY)
STRATEGY_NAMES = LATENT_RULES + SOURCE_STRATEGIES
DEFAULT_STRATEGY = "sfnn-max"
# One line per strategy for the Slicer panel and the web page: what it does, and whether it is the paper's.
STRATEGY_DESCRIPTIONS = {
    "sfnn-max": "the paper's method (SFNN): one weight per image from the nuclear norms of its softmax maps, "
                "max over channels",
    "sfnn-mean": "the paper's SFNN with the mean over channels",
    "sfnn-sum": "the paper's SFNN with the sum over channels (the same weights as the mean)",
    "sfnn-identity": "the paper's SFNN with one weight per channel",
    "fer": "compared in the paper: feature energy ratio, weight f_a^2 / (f_a^2 + f_b^2) per element",
    "fl1n": "compared in the paper: L1-norm weight |f_a| / (|f_a| + |f_b|) per element",
    "average": "compared in the paper: the mean of the two latents",
    "max": "compared in the paper: the element-wise maximum of the two latents",
    "spatial-sfnn": "beyond the paper: SFNN's channel softmax, its activity taken per window, one weight per pixel",
    "two-scale": "beyond the paper: the latents' smooth bases averaged, their detail weighted by local energy",
    "guided-pyramid": "beyond the paper: the latents weigh, the sources' own Laplacian pyramids are fused "
                      "(no decoder)",
    "max-anchored": "beyond the paper: the decoded activity fusion pulled toward the sources' pixel maximum, "
                    "partly their guided pyramid",
    "learned": "beyond the paper: a trained head mixes, per pixel, the decoded activity fusion, the sources' "
               "maximum and their guided pyramid, weighed from both latents",
}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")


def strategies_offered(defaults: Iterable[str] = ()) -> list[str]:
    """The strategies to list for users: the named ones, then any models' default not among them (a member of the
    activity family chosen as a default, e.g. ``activity-p1``)."""
    return list(dict.fromkeys([*STRATEGY_NAMES, *(name for name in defaults if is_strategy(name))]))


def strategy_description(name: str) -> str:
    """One line saying what ``name`` does (any ``activity-p<P>`` included); "" for a name this version lacks."""
    if name in STRATEGY_DESCRIPTIONS:
        return STRATEGY_DESCRIPTIONS[name]
    if is_strategy(name):
        power = name.removeprefix("activity-p")
        same = [member for member, p in ACTIVITY_MEMBERS.items() if p == float(power)]
        return (f"beyond the paper: tempered activity weight |f_a|^{power} / (|f_a|^{power} + |f_b|^{power}) per "
                "element" + (f" (the same rule as {same[0]})" if same else ""))
    return ""


def strategy_argument(name: str) -> str:
    """argparse type of ``--strategy``: a listed strategy or any ``activity-p<P>``."""
    import argparse

    if not is_strategy(name):
        raise argparse.ArgumentTypeError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGY_NAMES)} "
                                         "or activity-p<P> (0 <= P <= 8)")
    return name


def is_strategy(name: str) -> bool:
    """A listed strategy, or any ``activity-p<P>`` of the tempered activity family."""
    import re

    return name in STRATEGY_NAMES or re.fullmatch(r"activity-p\d+(\.\d+)?", name) is not None
