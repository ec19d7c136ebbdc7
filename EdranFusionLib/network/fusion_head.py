"""Learned stage-2 fusion (beyond the paper): per-pixel fusion weights predicted from both latents, and a copy
of the decoder fine-tuned on fused latents.

The paper's SFNN gives one weight per image (fusion/sfnn.py); this head gives one per pixel, from what both
encoders see around it, and its decoder learns to render blended latents rather than single images. It is
trained on pairs without ground truth with the encoder frozen (training/fusion_trainer.py) and stored with
the autoencoder in the same weights file under ``fusion_head.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import _LEAK, LATENT_CHANNELS, Decoder

HIDDEN_CHANNELS = 32


class FusionHead(nn.Module):
    """Weights W_a in (0, 1) per pixel from both latents (1x1 reduction, two dilated 3x3 convs, sigmoid);
    fused latent W_a f_a + (1 - W_a) f_b; image from the head's own decoder."""

    def __init__(self, channels: int = LATENT_CHANNELS, hidden: int = HIDDEN_CHANNELS, decoder: bool = True) -> None:
        super().__init__()
        self.weights = nn.Sequential(
            nn.Conv2d(2 * channels, hidden, 1), nn.LeakyReLU(_LEAK),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.LeakyReLU(_LEAK),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )
        self.decoder = Decoder(channels) if decoder else nn.Identity()

    def weight_map(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """W_a [B, 1, H, W] in (0, 1), float32."""
        return torch.sigmoid(self.weights(torch.cat([fa, fb], dim=1)).float())

    def forward(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """The fused image [B, 1, H, W] (unclamped, like the autoencoder's decoder)."""
        weight = self.weight_map(fa, fb).to(fa.dtype)
        return self.decoder(fb + weight * (fa - fb))

    @classmethod
    def starting_from(cls, decoder: Decoder | None) -> FusionHead:
        """A new head whose decoder starts as ``decoder`` and whose weights start near one half everywhere.

        ``decoder=None`` builds the pixel-domain control: the same weight network on the two source images
        (one channel each), blending the pixels themselves, with no encoder and no decoder."""
        if decoder is None:
            head = cls(1, decoder=False)
        else:
            head = cls(decoder.layers[0].in_channels)
            head.decoder.load_state_dict(decoder.state_dict())
        with torch.no_grad():
            last = head.weights[-1]
            last.weight.mul_(0.01)
            last.bias.zero_()
        return head
