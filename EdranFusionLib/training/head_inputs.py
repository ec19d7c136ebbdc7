"""What the stage-2 head (beyond the paper) trains on, computed once per training pair.

The encoder and the decoder are frozen, so the latents of each pair and the candidates the head mixes
(fusion/learned.head_candidates) never change during training: they are computed once on the whole image (as at
fusion time, with no crop borders inside the network) and every step cuts its crops from them, instead of
running the network on every crop (about 5x faster on a CPU). Latents are kept in bfloat16 (17 MB a pair), the
sources and candidates in float32, which the loss compares exactly.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..fusion.learned import head_candidates, pixel_candidates
from .datasets import Sample, TrainingImages


class HeadBatch(NamedTuple):
    """Crops of both latents [B, C, h, w], both sources [B, 1, h, w] and the candidates [B, 3, h, w]."""

    fa: torch.Tensor
    fb: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    candidates: torch.Tensor


class HeadInputs:
    """Deterministic, resumable batches of head inputs; ``encoder=None`` is the pixel-domain control (the
    images as their own latents, the identity as decoder). ``decode`` gives the first candidate (default: the
    encoder's decoder; a head's fused decoder when it has one)."""

    def __init__(self, pairs: Sequence[Sample], encoder: nn.Module | None, crop: int | None, flips: bool, *,
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None, dtype: torch.dtype = torch.float32,
                 progress: bool = True) -> None:
        from tqdm import tqdm

        pixels, latents = [], []
        for sample in tqdm(pairs, desc="latents and candidates", disable=not progress, mininterval=5,
                           file=sys.stderr):
            sources = torch.from_numpy(sample.image).float()[:, None]  # [2, 1, H, W]
            ya, yb = sources.chunk(2)
            with torch.inference_mode():
                if encoder is None:
                    candidates = pixel_candidates(ya, yb)
                else:
                    network_input = sources.contiguous(memory_format=torch.channels_last).to(dtype)
                    fa, fb = encoder.encode(network_input).chunk(2)
                    candidates = head_candidates(encoder.decode if decode is None else decode, fa, fb, ya, yb)
            pixels.append(torch.cat([ya, yb, candidates], dim=1)[0])
            if encoder is not None:
                latents.append(torch.cat([fa, fb], dim=1)[0].to(torch.bfloat16).contiguous())
        self.pixels = TrainingImages.of_tensors(pixels, crop, flips)
        self.latents = TrainingImages.of_tensors(latents, crop, flips) if latents else None

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.pixels.steps_per_epoch(batch_size)

    def batches(self, seed: int, epoch: int, batch_size: int, start: int = 0) -> Iterator[HeadBatch]:
        """The epoch's batches from batch number ``start`` (latents as float32)."""
        pixel_batches = self.pixels.batches(seed, epoch, batch_size, start=start)
        latent_batches = (self.latents.batches(seed, epoch, batch_size, start=start) if self.latents is not None
                          else itertools.repeat(None))
        for pixels, latents in zip(pixel_batches, latent_batches):
            a, b, candidates = pixels[:, 0:1], pixels[:, 1:2], pixels[:, 2:]
            fa, fb = (a, b) if latents is None else latents.float().chunk(2, dim=1)
            yield HeadBatch(fa, fb, a, b, candidates)
