"""Fusion rules on latent feature batches (paper section 2.2 and the baselines it compares with).

All rules take two latents [B, C, H, W] and return the fused latent with the same shape, device and dtype.
Weights are computed in float32 whatever the latent dtype, so bf16/fp16 inference does not disturb them.
"""

from __future__ import annotations

import torch

from .devices import worker_pool
from .errors import EdranFusionError

STRATEGY_NAMES = ("sfnn-max", "sfnn-mean", "sfnn-sum", "sfnn-identity", "fer", "fl1n", "average", "max")
DEFAULT_STRATEGY = "sfnn-max"


def nuclear_norms(maps: torch.Tensor) -> torch.Tensor:
    """Nuclear norm of every [H, W] matrix in ``maps`` [..., H, W].

    Uses the eigenvalues of the smaller Gram matrix (sigma_i = sqrt(lambda_i)), which is symmetric and
    n x n with n = min(H, W): about twice as fast as an SVD and equal to it within 1e-5 relative.
    """
    m = maps.float()
    gram = m @ m.mT if m.shape[-2] <= m.shape[-1] else m.mT @ m
    return _eigvalsh(gram).clamp_min(0).sqrt().sum(-1)


def _eigvalsh(gram: torch.Tensor) -> torch.Tensor:
    """Batched eigenvalues. LAPACK's symmetric eigensolver threads badly at a few hundred rows (two threads take
    ~4x the CPU time of one), so on a CPU with several torch threads the batch is split over single-threaded
    workers instead. Inside the fuser's workers torch is already single-threaded and this is one plain call."""
    threads = torch.get_num_threads()
    if gram.device.type != "cpu" or threads == 1 or gram.dim() < 3:
        return torch.linalg.eigvalsh(gram)
    flat = gram.reshape(-1, *gram.shape[-2:])
    with worker_pool(threads) as pool:
        parts = list(pool.map(torch.linalg.eigvalsh, flat.chunk(threads)))
    return torch.cat(parts).reshape(gram.shape[:-1])


def nuclear_norms_svd(maps: torch.Tensor) -> torch.Tensor:
    """Reference nuclear norm by singular value decomposition (slower; kept to cross-check and benchmark)."""
    return torch.linalg.svdvals(maps.float()).sum(-1)


def sfnn_weights(fa: torch.Tensor, fb: torch.Tensor, phi: str = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """SFNN weights W_a, W_b (Eq. 2): nuclear norms of the channel-softmax maps, reduced by ``phi``.

    ``phi`` in max/mean/sum gives one weight per image ([B,1,1,1]); identity one per channel ([B,C,1,1]).
    Mean and sum give identical weights because the 1/C cancels in the ratio (as the notes point out).
    Weights are not squared (the authors' code squares them; the paper's Eq. 2 does not).
    """
    norms = [nuclear_norms(torch.softmax(f, dim=1, dtype=torch.float32)) for f in (fa, fb)]  # each [B, C]
    if phi == "identity":
        reduced = norms
    elif phi == "max":
        reduced = [n.amax(dim=1, keepdim=True) for n in norms]
    elif phi == "mean":
        reduced = [n.mean(dim=1, keepdim=True) for n in norms]
    elif phi == "sum":
        reduced = [n.sum(dim=1, keepdim=True) for n in norms]
    else:
        raise EdranFusionError(f"unknown SFNN phi '{phi}'; use max, mean, sum or identity")
    total = reduced[0] + reduced[1]
    return tuple((r / total)[..., None, None] for r in reduced)  # type: ignore[return-value]


def _elementwise_ratio(activity_a: torch.Tensor, activity_b: torch.Tensor) -> torch.Tensor:
    """activity_a / (activity_a + activity_b), 1/2 where both are zero."""
    total = activity_a + activity_b
    return torch.where(total > 0, activity_a / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)


def fuse_latents(fa: torch.Tensor, fb: torch.Tensor, strategy: str = DEFAULT_STRATEGY) -> torch.Tensor:
    """Fuse two latent batches with one of :data:`STRATEGY_NAMES`.

    - ``sfnn-*``: W_a f_a + W_b f_b with the SFNN weights (weights applied to the pre-softmax features).
    - ``fer``: feature energy ratio (MSRPAN), element-wise weight f_a^2 / (f_a^2 + f_b^2).
    - ``fl1n``: L1-norm weights as MSDRA's test code applies them, element-wise |f_a| / (|f_a| + |f_b|).
    - ``average`` and ``max``: element-wise mean and maximum.
    """
    if fa.shape != fb.shape:
        raise EdranFusionError(
            f"latent shapes differ ({tuple(fa.shape)} vs {tuple(fb.shape)}); fuse images of one size"
        )
    if strategy.startswith("sfnn-") and strategy in STRATEGY_NAMES:
        wa, wb = sfnn_weights(fa, fb, strategy.removeprefix("sfnn-"))
        return (fa * wa + fb * wb).to(fa.dtype)  # float32 weights promote the products to float32
    if strategy == "fer":
        wa = _elementwise_ratio(fa.float().square(), fb.float().square())
    elif strategy == "fl1n":
        wa = _elementwise_ratio(fa.float().abs(), fb.float().abs())
    elif strategy == "average":
        return (fa + fb) / 2
    elif strategy == "max":
        return torch.maximum(fa, fb)
    else:
        raise EdranFusionError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGY_NAMES)}")
    return (wa * fa.float() + (1 - wa) * fb.float()).to(fa.dtype)
