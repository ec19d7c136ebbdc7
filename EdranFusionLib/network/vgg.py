"""Frozen ImageNet VGG16 feature stack in plain torch, for the perceptual loss (no torchvision).

Two weight files are understood, each with its own input convention:

- ``caffe``: the Oxford/Caffe release (``vgg16_imagenet_features_bgr.npz``; Keras ``weights='imagenet'``):
  BGR, 0..255, minus the per-channel mean, no division by a standard deviation.
- ``torchvision``: ``vgg16-397923af.pth``: RGB in [0,1], minus mean, divided by std.

Both are keyed like torchvision's ``vgg16().features`` state dict. Gray images in [0,1] are replicated to three
channels and converted to the convention of the weights actually loaded, so the features mean what ImageNet
training made them mean. Nothing is ever downloaded: a missing file is a one-line error saying how to get one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import EdranFusionError

# (name, out channels) per conv, "M" for max-pooling: torchvision's features indices follow from this layout.
_LAYOUT: tuple = (
    ("1_1", 64), ("1_2", 64), "M",
    ("2_1", 128), ("2_2", 128), "M",
    ("3_1", 256), ("3_2", 256), ("3_3", 256), "M",
    ("4_1", 512), ("4_2", 512), ("4_3", 512), "M",
    ("5_1", 512), ("5_2", 512), ("5_3", 512),
)
CONVENTIONS = ("caffe", "torchvision")
ENV_VAR = "EDRANFUSION_VGG16"
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CANDIDATES = (
    _REPO_ROOT.parent / "shared" / "weights" / "vgg16_imagenet_features_bgr.npz",
    Path.home() / ".cache" / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth",
)
HOW_TO_GET = (
    "give --vgg-weights PATH (or set EDRANFUSION_VGG16) to the Caffe-convention vgg16_imagenet_features_bgr.npz "
    "or torchvision's vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth, fetch it on a "
    "machine with network access), or train with --perceptual-weight 0"
)


def _layer_indices() -> dict[str, int]:
    """Map 'conv3_3' / 'relu3_3' / 'pool3' to the index of that module in ``features``."""
    names: dict[str, int] = {}
    index, block = 0, 1
    for item in _LAYOUT:
        if item == "M":
            names[f"pool{block}"] = index
            index, block = index + 1, block + 1
            continue
        suffix, _ = item
        names[f"conv{suffix}"], names[f"relu{suffix}"] = index, index + 1
        index += 2
    return names


LAYER_INDEX = _layer_indices()


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: the given path, else $EDRANFUSION_VGG16, else a known default location."""
    if path is not None:
        candidate = Path(path).expanduser()
        if not candidate.is_file():
            raise EdranFusionError(f"VGG16 weights file {candidate} does not exist; {HOW_TO_GET}")
        return candidate
    if os.environ.get(ENV_VAR):
        return find_weights(os.environ[ENV_VAR])
    for candidate in DEFAULT_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise EdranFusionError(f"no VGG16 weights file found for the perceptual loss; {HOW_TO_GET}")


def convention_of(path: Path) -> str:
    """``caffe`` for the .npz release, ``torchvision`` for a .pth/.pt state dict."""
    return "caffe" if path.suffix.lower() == ".npz" else "torchvision"


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path) as archive:
                return {key: torch.from_numpy(archive[key].astype(np.float32)) for key in archive.files}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # numpy/torch raise many types for truncated or foreign files
        raise EdranFusionError(
            f"VGG16 weights file {path} is unreadable ({type(error).__name__}); {HOW_TO_GET}"
        ) from error
    if not isinstance(state, dict):
        raise EdranFusionError(f"VGG16 weights file {path} holds no state dict; {HOW_TO_GET}")
    return state


class VGG16Features(nn.Module):
    """VGG16 convolution stack up to the deepest requested layer; returns those layers' activations."""

    def __init__(self, layers: Sequence[str] = ("relu3_3",), convention: str = "caffe") -> None:
        super().__init__()
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown or not layers:
            raise EdranFusionError(
                f"unknown VGG16 layer(s) {unknown or '(none)'}; "
                "choose from conv1_1..conv5_3, relu1_1..relu5_3, pool1..pool4"
            )
        if convention not in CONVENTIONS:
            raise EdranFusionError(f"unknown VGG16 input convention '{convention}'; choose {' or '.join(CONVENTIONS)}")
        self.layers = tuple(layers)
        self.convention = convention
        self._taps = {LAYER_INDEX[name]: name for name in self.layers}
        modules: list[nn.Module] = []
        channels = 3
        for item in _LAYOUT:
            if len(modules) > max(self._taps):
                break
            if item == "M":
                modules.append(nn.MaxPool2d(2, 2))
                continue
            modules += [nn.Conv2d(channels, item[1], 3, padding=1), nn.ReLU(inplace=False)]
            channels = item[1]
        self.features = nn.Sequential(*modules[: max(self._taps) + 1])
        if convention == "caffe":  # gray -> BGR identical channels, 0..255 minus mean
            scale, shift = torch.full((3,), 255.0), -torch.tensor(_CAFFE_MEAN_BGR)
        else:  # gray -> RGB in [0,1], (x - mean) / std
            std = torch.tensor(_TORCHVISION_STD_RGB)
            scale, shift = 1.0 / std, -torch.tensor(_TORCHVISION_MEAN_RGB) / std
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        """Always stays in eval mode: the stack is a fixed feature extractor."""
        return super().train(False)

    def forward(self, gray: torch.Tensor) -> dict[str, torch.Tensor]:
        """[B,1,H,W] gray in [0,1] -> {layer name: activation}."""
        x = gray.expand(-1, 3, -1, -1) * self.scale.to(gray.dtype) + self.shift.to(gray.dtype)
        outputs = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self._taps:
                outputs[self._taps[index]] = x
        return outputs


def load_vgg16(path: str | os.PathLike | None = None, layers: Sequence[str] = ("relu3_3",),
               convention: str | None = None) -> VGG16Features:
    """A frozen feature stack loaded from ``path`` (or the default location), convention from the file type."""
    weights = find_weights(path)
    network = VGG16Features(layers, convention or convention_of(weights))
    state = {key: value for key, value in _read_state(weights).items() if key.startswith("features.")}
    wanted = network.state_dict()
    missing = [key for key in wanted if key not in state]
    if missing:
        raise EdranFusionError(f"VGG16 weights file {weights} lacks {missing[0]}; it is not a VGG16 features file")
    for key, value in wanted.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise EdranFusionError(f"VGG16 weights file {weights} has {key} of shape {tuple(state[key].shape)}, "
                                   f"expected {tuple(value.shape)}; it is not a VGG16 features file")
    network.load_state_dict({key: state[key] for key in wanted})
    return network
