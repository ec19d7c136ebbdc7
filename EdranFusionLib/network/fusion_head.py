"""Learned stage-2 fusion (beyond the paper): a small network that mixes candidate fused images pixel by pixel,
weighing them from both latents.

The paper's SFNN gives one weight per image (fusion/sfnn.py). Fixed blends trade one metric for another (the
decoded latents keep intensity and structure, the pixel maximum and the guided pyramid keep edges), so the head
chooses the blend per pixel: it sees both latents and the candidates (fusion/learned.py) and gives each pixel
softmax weights over them. It starts as a fixed blend (max-anchored fusion's, fusion/anchored.py) and is trained
on pairs without ground truth with the encoder and decoder frozen (training/fusion_trainer.py); it is stored
with the autoencoder in the same weights file under ``fusion_head.*``. It may carry its own copy of the decoder,
fine-tuned on fused latents (``fused_decoder``, trained first with ``--train decoder``): the autoencoder's decoder
only ever saw single images' latents, and decoding the fused latent is the one step no pixel rule can copy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .model import _LEAK, LATENT_CHANNELS, Decoder

CANDIDATES = 3
REDUCED_CHANNELS = 16
HIDDEN_CHANNELS = 32
_EVEN_START = (1 / CANDIDATES,) * CANDIDATES


class FusionHead(nn.Module):
    """Per-pixel softmax weights over ``CANDIDATES`` images from both latents (1x1 reduction) and the
    candidates themselves (a dilated 3x3 conv, a 3x3 conv, a 1x1 conv); the fused image is their weighted sum."""

    def __init__(self, channels: int = LATENT_CHANNELS, fused_decoder: bool = False) -> None:
        super().__init__()
        self.fused_decoder = Decoder(channels) if fused_decoder else None
        self.reduce = nn.Sequential(nn.Conv2d(2 * channels, REDUCED_CHANNELS, 1), nn.LeakyReLU(_LEAK))
        self.weights = nn.Sequential(
            nn.Conv2d(REDUCED_CHANNELS + CANDIDATES, HIDDEN_CHANNELS, 3, padding=2, dilation=2), nn.LeakyReLU(_LEAK),
            nn.Conv2d(HIDDEN_CHANNELS, HIDDEN_CHANNELS, 3, padding=1), nn.LeakyReLU(_LEAK),
            nn.Conv2d(HIDDEN_CHANNELS, CANDIDATES, 1),
        )

    def mixture_weights(self, fa: torch.Tensor, fb: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Weights [B, CANDIDATES, H, W] (float32, summing to 1 per pixel) for candidates [B, CANDIDATES, H, W]."""
        reduced = self.reduce(torch.cat([fa, fb], dim=1))
        logits = self.weights(torch.cat([reduced, candidates.to(reduced.dtype)], dim=1))
        return torch.softmax(logits.float(), dim=1)

    def forward(self, fa: torch.Tensor, fb: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The fused image [B, 1, H, W] (float32)."""
        weights = self.mixture_weights(fa, fb, candidates)
        return (weights * candidates.float()).sum(dim=1, keepdim=True)

    @classmethod
    def starting_as(cls, channels: int, blend: Sequence[float] = _EVEN_START) -> FusionHead:
        """A new head on latents of ``channels`` channels whose weights start near the fixed ``blend`` of the
        candidates everywhere (1 channel: the pixel-domain control, the images as their own latents)."""
        head = cls(channels)
        with torch.no_grad():
            last = head.weights[-1]
            last.weight.mul_(0.01)
            last.bias.copy_(torch.tensor(blend, dtype=torch.float32).clamp_min(1e-3).log())
        return head
