"""Time per 256x256 pair of every fusion strategy: the shared encode of both images plus each rule + decode.

The encoder's work does not depend on the rule, so it is timed once and every strategy's figure is
encode + (rule + decode), the guided pyramid's encode + pyramid; ratios against the paper's sfnn-max are
within one run.
"""

from __future__ import annotations

import torch

from ..choices import LATENT_RULES, LEARNED_STRATEGY, SOURCE_STRATEGIES
from ..fusion.rules import fuse_latents
from ..fusion.strategies import decode_fused
from ..io.weights import bundled_models, card_default_strategy
from ..network.devices import resolve_precision
from ..network.model import EHDRAN, fold_for_inference
from .speed import SIZE, median_seconds


@torch.inference_mode()
def strategy_timings(base: EHDRAN, precision: str = "auto", repeats: int = 3) -> dict:
    """Seconds per pair for every strategy on the CPU (at the fuser's precision), and the ratio of each bundled
    model's default strategy to sfnn-max."""
    dtype = resolve_precision(precision, torch.device("cpu"))
    model = fold_for_inference(base).to(dtype=dtype, memory_format=torch.channels_last)
    pair = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)).to(dtype)
    pair = pair.contiguous(memory_format=torch.channels_last)
    encode = median_seconds(lambda: model.encode(pair), repeats)
    latent_a, latent_b = model.encode(pair).chunk(2)
    rows = {}
    sources = pair.float().chunk(2)
    defaults = {name: card_default_strategy(model.card) for name, model in bundled_models().items()}
    # activity-p0.5: one member of the activity family
    timed = (*LATENT_RULES, "activity-p0.5", *SOURCE_STRATEGIES, *defaults.values())
    for strategy in dict.fromkeys(s for s in timed if s != LEARNED_STRATEGY or model.fusion_head is not None):
        has_rule_step = strategy not in SOURCE_STRATEGIES
        rule = (median_seconds(lambda s=strategy: fuse_latents(latent_a, latent_b, s), repeats)
                if has_rule_step else None)
        decode = median_seconds(lambda s=strategy: decode_fused(model, latent_a, latent_b, s, sources), repeats)
        rows[strategy] = {"rule_seconds": rule, "seconds_per_pair": encode + decode}
    reference = rows["sfnn-max"]["seconds_per_pair"]
    return {"precision": str(dtype).replace("torch.", ""), "encode_seconds": encode, "strategies": rows,
            "defaults": defaults, "default_vs_sfnn_max": {s: rows[s]["seconds_per_pair"] / reference
                                                          for s in set(defaults.values()) if s in rows}}


def print_strategies(results: dict) -> None:
    print(f"\nfusion strategies per 256x256 pair ({results['precision']}; encode of both images "
          f"{results['encode_seconds'] * 1000:.0f} ms shared)")
    reference = results["strategies"]["sfnn-max"]["seconds_per_pair"]
    for name, row in results["strategies"].items():
        rule = "       -" if row["rule_seconds"] is None else f"{row['rule_seconds'] * 1000:8.1f}"
        print(f"  {name:16s} rule {rule} ms  pair {row['seconds_per_pair'] * 1000:8.1f} ms"
              f"  x{row['seconds_per_pair'] / reference:4.2f} of sfnn-max")
    ratios = results["default_vs_sfnn_max"]
    print("  model defaults: " + ", ".join(f"{model} {s} (x{ratios[s]:.2f})" if s in ratios else f"{model} {s}"
                                           for model, s in results["defaults"].items()))
