"""Stage-1 reconstruction loss (paper section 2.3): pixel MSE + lambda1 * gradient + lambda2 * perceptual.

The gradient term keeps edges sharp (Sobel x and y), the perceptual term keeps texture (frozen VGG16 features);
either is switched off with a zero weight, which is how the paper's "without gradient loss" ablation is trained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .vgg import VGG16Features

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives (x, y) of a [B,1,H,W] batch, replicate-padded so borders carry no false edges."""
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(image.device, image.dtype)
    both = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), kernel)
    return both[:, 0:1], both[:, 1:2]


def gradient_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the Sobel x and y derivatives."""
    out_x, out_y = sobel(output)
    tgt_x, tgt_y = sobel(target)
    return F.mse_loss(out_x, tgt_x) + F.mse_loss(out_y, tgt_y)


def perceptual_loss(features: VGG16Features, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared difference of VGG16 activations relative to the target's mean square, averaged over layers.

    The relative form makes the value independent of the weights' input convention (Caffe activations are
    ~60x larger than torchvision's) and keeps lambda2 = 0.5 comparable to the pixel and gradient terms.
    """
    with torch.no_grad():
        wanted = features(target)
    got = features(output)
    total = output.new_zeros(())
    for name in features.layers:
        reference = wanted[name].float()
        total = total + F.mse_loss(got[name].float(), reference) / (reference.square().mean() + 1e-8)
    return total / len(features.layers)


class ReconstructionLoss(nn.Module):
    """Total loss and its parts; ``vgg`` may be None only when the perceptual weight is zero."""

    def __init__(self, gradient_weight: float = 0.5, perceptual_weight: float = 0.5,
                 vgg: VGG16Features | None = None) -> None:
        super().__init__()
        if perceptual_weight > 0 and vgg is None:
            raise ValueError("a perceptual weight > 0 needs a VGG16 feature stack")
        self.gradient_weight = gradient_weight
        self.perceptual_weight = perceptual_weight
        self.vgg = vgg if perceptual_weight > 0 else None

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """(total loss, {'pixel', 'gradient', 'perceptual', 'total'} as floats for logging)."""
        output = output.float()
        target = target.float()
        pixel = F.mse_loss(output, target)
        total = pixel
        parts = {"pixel": pixel.detach()}
        if self.gradient_weight > 0:
            gradient = gradient_loss(output, target)
            total = total + self.gradient_weight * gradient
            parts["gradient"] = gradient.detach()
        if self.vgg is not None:
            perceptual = perceptual_loss(self.vgg, output, target)
            total = total + self.perceptual_weight * perceptual
            parts["perceptual"] = perceptual.detach()
        parts["total"] = total.detach()
        return total, {name: float(value) for name, value in parts.items()}
