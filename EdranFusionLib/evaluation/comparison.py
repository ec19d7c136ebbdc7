"""Comparing fusion rules honestly: the same rule on latents and on pixels, paired wins and bootstrap intervals.

- :func:`pixel_rule`: any fusion rule of :mod:`..fusion.rules` applied to the source luminance itself (no
  network), the control that shows what the network adds;
- :func:`latent_methods`: several rules on one model, encoding each pair once (the encoder is most of the cost);
- :func:`paired_comparison`: per metric, on how many pairs a method beats a reference, the mean difference and
  its bootstrap 95% interval (pairs resampled with replacement).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EdranFusionError
from ..fusion.color import gray_levels, is_colour, recolour
from .evaluate import Fuse, Method
from .metrics import fmi, fsim, psnr, qabf, ssim
from .metrics._common import gray

TARGET_METRICS = ("PSNR", "SSIM", "FMI_edge", "FSIM", "Qabf")


def target_metrics(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The five metrics of the comparison target (computed as :func:`..metrics.fusion_metrics` does)."""
    f, x, y = gray(fused), gray(a), gray(b)
    return {"PSNR": (psnr(x, f) + psnr(y, f)) / 2, "SSIM": (ssim(x, f) + ssim(y, f)) / 2,
            "FMI_edge": (fmi(x, f, "edge") + fmi(y, f, "edge")) / 2, "FSIM": (fsim(x, f) + fsim(y, f)) / 2,
            "Qabf": qabf(f, x, y)}


def _as_output(fused_y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fused luminance (0..255) as the fuser returns it: gray uint8, or recoloured with the colour source."""
    colour = next((x for x in (a, b) if is_colour(x)), None)
    return np.clip(np.rint(fused_y), 0, 255).astype(np.uint8) if colour is None else recolour(fused_y, colour)


def _pair_batch(a: np.ndarray, b: np.ndarray):
    """Both sources' luminance as one float32 [2, 1, H, W] batch in [0, 1] (the encoder's input)."""
    import torch

    return torch.from_numpy(np.stack([gray_levels(a), gray_levels(b)])[:, None] / 255.0).float()


def pixel_rule(strategy: str) -> Fuse:
    """``strategy`` on the sources' luminance scaled to [0, 1], as a 1-channel "latent" (no network): the same
    strategies.decode_fused with the identity as encoder and decoder, so the guided pyramid then weighs by the
    intensities alone and max-anchored fusion anchors the pixel activity blend to the pixel maximum and pyramid."""
    import torch

    from ..fusion.strategies import decode_fused

    class PixelDomain(torch.nn.Module):
        """An autoencoder that is the identity: the images are their own latents."""

        def decode(self, latent: torch.Tensor) -> torch.Tensor:
            return latent

    pixels = PixelDomain()

    def fuse(_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ya, yb = (torch.from_numpy(gray_levels(x) / 255.0).float()[None, None] for x in (a, b))
        fused = decode_fused(pixels, ya, yb, strategy, (ya, yb))
        return _as_output(fused[0, 0].double().numpy() * 255, a, b)

    return fuse


def learned_pixel_control(model: str) -> Fuse:
    """The learned head's own per-pixel weights applied to the pixel-domain candidates (the pixel activity fusion,
    the maximum, the intensity-weighted pyramid; no decoder): what the network's candidates add over the same mix
    of pixel rules."""
    import torch

    from ..fusion.learned import learned_weights, pixel_candidates
    from ..fusion.pipeline import as_model
    from ..network.model import fold_for_inference

    network = fold_for_inference(as_model(model)).eval()

    @torch.inference_mode()
    def fuse(_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pair = _pair_batch(a, b)
        ya, yb = pair.chunk(2)
        weights = learned_weights(network, *network.encode(pair).chunk(2), ya, yb)
        candidates = pixel_candidates(ya, yb)
        return _as_output((weights * candidates).sum(1)[0].double().numpy() * 255, a, b)

    return fuse


def pixel_head(weights_file: str) -> Fuse:
    """A head trained on the source images themselves (``fusion_trainer --on-pixels``): the learned head's
    pixel-domain control, the same architecture and loss on the images and their pixel-rule candidates, without
    the encoder and the decoder."""
    import torch

    from ..fusion.learned import pixel_candidates
    from ..network.fusion_head import FusionHead

    head = FusionHead(1).eval()
    try:
        head.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    except Exception as error:  # missing, truncated or another kind of weights file
        raise EdranFusionError(f"{weights_file} is not a pixel head ({type(error).__name__}); give the final.pt of "
                               "a fusion_trainer --on-pixels run") from error

    @torch.inference_mode()
    def fuse(_name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ya, yb = _pair_batch(a, b).chunk(2)
        fused = head(ya, yb, pixel_candidates(ya, yb))
        return _as_output(fused[0, 0].double().numpy() * 255, a, b)

    return fuse


def latent_methods(model: str, strategies: Sequence[str], labels: Sequence[str] | None = None) -> list[Method]:
    """One method per strategy on ``model``; the pair's latents are computed once and shared (fp32)."""
    import torch

    from ..fusion.pipeline import as_model
    from ..fusion.strategies import decode_fused
    from ..network.model import fold_for_inference

    network = fold_for_inference(as_model(model)).eval()
    cache: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def method(strategy: str) -> Fuse:
        @torch.inference_mode()
        def fuse(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            if name not in cache:
                cache.clear()
                pair = _pair_batch(a, b)
                cache[name] = (*network.encode(pair).chunk(2), pair)
            latent_a, latent_b, pair = cache[name]
            fused = decode_fused(network, latent_a, latent_b, strategy, pair.chunk(2)).clamp(0, 1)
            return _as_output(fused[0, 0].double().numpy() * 255, a, b)

        return fuse

    return [Method(label, method(strategy)) for label, strategy in zip(labels or strategies, strategies)]


def paired_comparison(rows: Sequence[dict], method: str, reference: str, metrics: Sequence[str] = TARGET_METRICS,
                      *, resamples: int = 2000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Per metric: pairs where ``method`` beats ``reference`` (strictly), pairs, mean difference and its
    bootstrap 95% interval. Rows are per (pair, method) as :func:`..evaluate.evaluate` returns them."""
    by_pair = {(row["pair"], row["method"]): row for row in rows}
    pairs = sorted({row["pair"] for row in rows if row["method"] == method
                    and (row["pair"], reference) in by_pair})
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(pairs), size=(resamples, len(pairs))) if pairs else None
    result = {}
    for metric in metrics:
        diff = np.array([by_pair[(p, method)][metric] - by_pair[(p, reference)][metric] for p in pairs])
        low, high = (np.percentile(diff[draws].mean(axis=1), [2.5, 97.5]) if pairs else (np.nan, np.nan))
        result[metric] = {"wins": int((diff > 0).sum()), "pairs": len(pairs),
                          "mean_diff": float(diff.mean()) if pairs else float("nan"),
                          "ci_low": float(low), "ci_high": float(high)}
    return result


def metrics_beaten(comparison: dict[str, dict[str, float]]) -> list[str]:
    """Metrics whose mean difference is positive (the method is better on average)."""
    return [metric for metric, stats in comparison.items() if stats["mean_diff"] > 0]


def comparison_markdown(rows: Sequence[dict], methods: Sequence[str], references: Sequence[str],
                        metrics: Sequence[str] = TARGET_METRICS) -> str:
    """A table: per method and reference, per metric 'wins/pairs, mean difference [95% interval]'."""
    lines = ["| method | vs | " + " | ".join(metrics) + " | metrics better |",
             "|---|---|" + "---|" * len(metrics) + "---:|"]
    for method in methods:
        for reference in references:
            if reference == method:
                continue
            stats = paired_comparison(rows, method, reference, metrics)
            digits = {metric: 2 if metric == "PSNR" else 3 for metric in metrics}
            cells = [f"{s['wins']}/{s['pairs']}, {s['mean_diff']:+.{digits[m]}f} "
                     f"[{s['ci_low']:+.{digits[m]}f}, {s['ci_high']:+.{digits[m]}f}]" for m, s in stats.items()]
            lines.append(f"| {method} | {reference} | " + " | ".join(cells) + f" | {len(metrics_beaten(stats))} |")
    return "\n".join(lines) + "\n"
