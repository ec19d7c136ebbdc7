"""SFNN, the paper's fusion rule (section 2.2, Eq. 2): softmax of the latent over channels, nuclear norm of each
channel's HxW map, reduced over channels by phi, normalised into one weight per image (or per channel).

Weights are computed in float32 whatever the latent dtype, so bf16/fp16 inference does not disturb them.
"""

from __future__ import annotations

import torch

from ..errors import EdranFusionError
from ..network.devices import worker_pool


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
