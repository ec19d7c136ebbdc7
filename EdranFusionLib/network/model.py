"""EH-DRAN autoencoder (paper section 2.1).

Encoder: shallow 1x1 conv -> dilated multi-scale block -> residual + pyramid attention, plus the DRGO edge
enhancer on the shallow features added element-wise. Decoder: three 3x3 convs with LeakyReLU between them.
The latent keeps the input's H x W, so any size works: the attention mask is pooled with ``ceil_mode`` and
up-sampled back to the exact input size instead of requiring even dimensions.

Where the paper is silent the authors' code fills the gap; where they disagree the paper wins (see
docs/DESIGN.md): learned sigmoid attention mask, separate pyramid convolutions, DRGO with residual
connections and a fixed (non-trainable) Sobel operator.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

LATENT_CHANNELS = 64
_LEAK = 0.2


def _conv3x3(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)


class DilatedMultiScale(nn.Module):
    """Parallel 3x3 convs with dilation 1, 3, 5, concatenated and reduced back to C channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(_conv3x3(channels, channels, d) for d in (1, 3, 5))
        self.reduce = nn.Conv2d(3 * channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multi = torch.cat([branch(x) for branch in self.branches], dim=1)
        return F.leaky_relu(self.norm(self.reduce(multi)), _LEAK)


class PyramidTrunk(nn.Module):
    """Sum of 1, 2 and 3 stacked 3x3 convs: receptive fields 3, 5 and 7 without large kernels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.paths = nn.ModuleList(self._stack(channels, depth) for depth in (1, 2, 3))

    @staticmethod
    def _stack(channels: int, depth: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [_conv3x3(channels, channels), nn.LeakyReLU(_LEAK)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow, middle, deep = (path(x) for path in self.paths)
        return shallow + middle + deep  # not sum(): its leading 0 + tensor costs a full extra pass


class SoftMask(nn.Module):
    """Residual-attention mask branch: down-sample, conv, up-sample to the input size, sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.down_conv = _conv3x3(channels, channels)
        self.up_conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.avg_pool2d(x, 2, ceil_mode=True)
        low = F.leaky_relu(self.down_conv(low), _LEAK)
        up = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.up_conv(up))


class ResidualPyramidAttention(nn.Module):
    """x + mask(x) * pyramid(x): the mask re-weights multi-scale features, the identity keeps gradients."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trunk = PyramidTrunk(channels)
        self.mask = SoftMask(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mask(x) * self.trunk(x)


class SobelMagnitude(nn.Module):
    """Fixed depthwise Sobel gradient magnitude of every channel (the paper's non-learned operator)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        kernel = torch.stack([gx, gx.t()]).unsqueeze(1).repeat(channels, 1, 1, 1)
        self.register_buffer("kernel", kernel, persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernel.to(x.dtype), groups=self.channels)
        gx, gy = g[:, 0::2], g[:, 1::2]
        return torch.sqrt(gx * gx + gy * gy + 1e-6)


class DRGO(nn.Module):
    """Dense residual gradient operator: two residual 3x3 convs plus Sobel magnitude -> 1x1 conv, summed."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)
        self.sobel = SobelMagnitude(channels)
        self.gradient_proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + F.leaky_relu(self.conv1(x), _LEAK)
        y = y + self.conv2(y)
        return y + self.gradient_proj(self.sobel(x))


class Decoder(nn.Module):
    """Lightweight decoder: 64 -> 64 -> 32 -> 1, LeakyReLU between layers, no final activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv3x3(channels, 64), nn.LeakyReLU(_LEAK),
            _conv3x3(64, 32), nn.LeakyReLU(_LEAK),
            _conv3x3(32, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class EHDRAN(nn.Module):
    """The asymmetric autoencoder. ``use_drgo=False`` builds the paper's ablation without the edge enhancer."""

    def __init__(self, use_drgo: bool = True, channels: int = LATENT_CHANNELS) -> None:
        super().__init__()
        self.use_drgo = use_drgo
        self.shallow = nn.Conv2d(1, channels, 1)
        self.multiscale = DilatedMultiScale(channels)
        self.attention = ResidualPyramidAttention(channels)
        self.drgo = DRGO(channels) if use_drgo else None
        self.decoder = Decoder(channels)
        # Beyond the paper: the learned stage-2 fusion head (fusion_head.py), attached when a weights file
        # holds one; the paper's rules never use it.
        self.fusion_head: nn.Module | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1,H,W] in [0,1] -> latent [B,64,H,W]."""
        shallow = self.shallow(x)
        if self.decoder.layers[0].weight.is_contiguous(memory_format=torch.channels_last):
            # A 1-channel input is ambiguous, so the 1x1 conv answers in NCHW; keep the model's channels-last
            # layout or every following conv pays a layout copy.
            shallow = shallow.contiguous(memory_format=torch.channels_last)
        latent = self.attention(self.multiscale(shallow))
        if self.drgo is not None:
            latent = latent + self.drgo(shallow)
        return latent

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent [B,64,H,W] -> image [B,1,H,W] (unclamped; the fuser clamps to [0,1])."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class FoldedMultiScale(nn.Module):
    """Inference form of :class:`DilatedMultiScale`: the 1x1 reduction and the eval BatchNorm are folded
    into the three dilated kernels, so the block is three convs summed in place: no 192-channel
    concatenation, no separate 1x1 conv and BatchNorm passes. Equal to the original in exact arithmetic.
    """

    def __init__(self, block: DilatedMultiScale) -> None:
        super().__init__()
        norm, channels = block.norm, block.norm.num_features
        with torch.no_grad():
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            reduce = block.reduce.weight[:, :, 0, 0] * scale[:, None]  # [C, 3C]
            bias = (block.reduce.bias - norm.running_mean) * scale + norm.bias
            self.convs = nn.ModuleList()
            for index, branch in enumerate(block.branches):
                part = reduce[:, index * channels : (index + 1) * channels]
                conv = _conv3x3(channels, channels, branch.dilation[0])
                conv.weight.copy_(torch.einsum("om,mikl->oikl", part, branch.weight))
                bias = bias + part @ branch.bias
                conv.bias.zero_()
                self.convs.append(conv)
            self.convs[0].bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1:]:
            out = out.add_(conv(x))
        return F.leaky_relu_(out, _LEAK)


class InferenceEHDRAN(nn.Module):
    """Fusion-time form of a trained :class:`EHDRAN`: the same ``encode``/``decode`` results in exact arithmetic,
    with fewer passes over the 64-channel maps (each pass costs about a third of a 3x3 conv on a CPU):

    - the dilated block is folded (:class:`FoldedMultiScale`);
    - the shallow 1x1 conv (one input channel) is a broadcast multiply-add written channels-last;
    - the mask's 1x1 conv runs before the bilinear up-sampling, at a quarter of the pixels (both are linear
      per pixel and the interpolation weights sum to one, so they commute);
    - DRGO's Sobel magnitude is taken on the one-channel input: Sobel kernels sum to zero and replicate
      padding commutes with the per-channel affine shallow map, so channel i's gradient is ``s_i`` times the
      input's gradient and its magnitude is ``sqrt(s_i^2 |grad x|^2 + 1e-6)``, without a 64-channel depthwise conv;
    - activations and residual sums run in place.

    Inference only: built from a copy, so ``model`` and its state-dict keys stay untouched.
    """

    def __init__(self, model: EHDRAN) -> None:
        super().__init__()
        model = copy.deepcopy(model).eval().requires_grad_(False)
        self.shallow = model.shallow
        self.multiscale = FoldedMultiScale(model.multiscale)
        self.attention = model.attention
        self.drgo = model.drgo
        self.decoder = model.decoder
        self.fusion_head = model.fusion_head
        for module in self.modules():
            if isinstance(module, nn.LeakyReLU):
                module.inplace = True

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B,1,H,W] in [0,1] -> latent [B,64,H,W], channels-last."""
        pixels = x.permute(0, 2, 3, 1)  # [B,H,W,1]: the result below is channels-last in memory
        shallow = torch.addcmul(self.shallow.bias, pixels, self.shallow.weight.view(-1)).permute(0, 3, 1, 2)
        latent = self._attention(self.multiscale(shallow))
        if self.drgo is not None:
            latent = latent.add_(self._drgo(x, shallow))
        return latent

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.attention.mask
        low = F.leaky_relu_(mask.down_conv(F.avg_pool2d(x, 2, ceil_mode=True)), _LEAK)
        weights = F.interpolate(mask.up_conv(low), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.attention.trunk(x).mul_(weights.sigmoid_()).add_(x)

    def _drgo(self, image: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        drgo = self.drgo
        y = shallow + F.leaky_relu_(drgo.conv1(shallow), _LEAK)
        y = y.add_(drgo.conv2(y))
        sobel = drgo.sobel.kernel[:2].to(image.dtype)  # x and y kernels of one channel
        gradient = F.conv2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), sobel)
        squared = gradient.square().sum(1, keepdim=True).permute(0, 2, 3, 1)  # [B,H,W,1]
        magnitude = (squared * self.shallow.weight.view(-1).square()).add_(1e-6).sqrt_().permute(0, 3, 1, 2)
        return y.add_(drgo.gradient_proj(magnitude))


def fold_for_inference(model: EHDRAN) -> InferenceEHDRAN:
    """The fusion-time form of ``model`` (see :class:`InferenceEHDRAN`)."""
    return InferenceEHDRAN(model)


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (the paper reports 0.50 M)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
