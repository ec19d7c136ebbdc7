"""The reconstruction loss and the VGG16 feature stack it uses (both weight conventions, missing weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.network import vgg
from EdranFusionLib.network.losses import ReconstructionLoss, gradient_loss, perceptual_loss, sobel

SHARED_VGG = Path(__file__).resolve().parents[2] / "shared" / "weights" / "vgg16_imagenet_features_bgr.npz"


def tiny_vgg_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for the first block (conv1_1, conv1_2): enough for layers up to relu1_2."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "features.0.weight": torch.randn(64, 3, 3, 3, generator=generator) * 0.1,
        "features.0.bias": torch.randn(64, generator=generator) * 0.1,
        "features.2.weight": torch.randn(64, 64, 3, 3, generator=generator) * 0.05,
        "features.2.bias": torch.randn(64, generator=generator) * 0.1,
    }


@pytest.fixture()
def npz_file(tmp_path: Path) -> Path:
    path = tmp_path / "vgg_caffe.npz"
    np.savez(path, **{key: value.numpy() for key, value in tiny_vgg_state().items()})
    return path


def test_sobel_sees_a_ramp_and_ignores_constants() -> None:
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]  # increases by 1 along x
    gx, gy = sobel(ramp)
    assert torch.allclose(gx[..., 1:-1, 1:-1], torch.full_like(gx[..., 1:-1, 1:-1], 8.0))
    assert torch.allclose(gy, torch.zeros_like(gy))
    flat_x, flat_y = sobel(torch.full((1, 1, 6, 6), 0.3))
    assert flat_x.abs().max() == 0 and flat_y.abs().max() == 0


def test_gradient_loss_is_zero_for_identical_images_and_positive_for_blur() -> None:
    image = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    blurred = F.avg_pool2d(image, 3, stride=1, padding=1)
    assert gradient_loss(image, image) == 0
    assert gradient_loss(blurred, image) > 0.01


def test_loss_parts_switch_off_and_weights_add_up(npz_file: Path) -> None:
    target = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    output = target + 0.1 * torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    features = vgg.load_vgg16(npz_file, ["relu1_2"])
    only_pixel = ReconstructionLoss(0.0, 0.0)
    total, parts = only_pixel(output, target)
    assert set(parts) == {"pixel", "total"} and torch.isclose(total, F.mse_loss(output, target))
    full = ReconstructionLoss(0.5, 0.5, features)
    total, parts = full(output, target)
    assert total.item() == pytest.approx(parts["pixel"] + 0.5 * parts["gradient"] + 0.5 * parts["perceptual"], rel=1e-5)
    with pytest.raises(ValueError):
        ReconstructionLoss(0.5, 0.5, None)


def test_perceptual_loss_gives_gradients_only_to_the_output(npz_file: Path) -> None:
    features = vgg.load_vgg16(npz_file, ["relu1_1", "relu1_2"])
    target = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    output = target.clone().mul(0.9).requires_grad_(True)
    value = perceptual_loss(features, output, target)
    value.backward()
    assert value > 0 and output.grad is not None and output.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in features.parameters())
    assert perceptual_loss(features, target, target) == 0


def _manual_relu1_1(state: dict[str, torch.Tensor], bgr_or_rgb: torch.Tensor) -> torch.Tensor:
    return F.relu(F.conv2d(bgr_or_rgb, state["features.0.weight"], state["features.0.bias"], padding=1))


def test_each_weight_file_gets_its_own_input_convention(npz_file: Path, tmp_path: Path) -> None:
    state = tiny_vgg_state()
    pth_file = tmp_path / "vgg16-397923af.pth"
    torch.save({**state, "classifier.0.weight": torch.zeros(4, 4)}, pth_file)  # torchvision files have more keys
    gray = torch.rand(1, 1, 10, 10, generator=torch.Generator().manual_seed(5))
    caffe = vgg.load_vgg16(npz_file, ["relu1_1"])
    torchvision = vgg.load_vgg16(pth_file, ["relu1_1"])
    assert (caffe.convention, torchvision.convention) == ("caffe", "torchvision")
    bgr = gray.repeat(1, 3, 1, 1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = (gray.repeat(1, 3, 1, 1) - mean) / std
    assert torch.allclose(caffe(gray)["relu1_1"], _manual_relu1_1(state, bgr), atol=1e-3)
    assert torch.allclose(torchvision(gray)["relu1_1"], _manual_relu1_1(state, rgb), atol=1e-4)


def test_stack_is_built_only_as_deep_as_needed_and_stays_frozen(npz_file: Path) -> None:
    features = vgg.load_vgg16(npz_file, ["relu1_2"])
    assert len(features.features) == 4
    features.train()
    assert not features.training


def test_missing_or_wrong_weights_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(vgg.ENV_VAR, raising=False)
    monkeypatch.setattr(vgg, "DEFAULT_CANDIDATES", (tmp_path / "absent.npz",))
    with pytest.raises(EdranFusionError, match="vgg16-397923af.pth"):
        vgg.find_weights()
    with pytest.raises(EdranFusionError, match="does not exist"):
        vgg.load_vgg16(tmp_path / "nowhere.npz")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(EdranFusionError, match="unreadable"):
        vgg.load_vgg16(garbage)
    with pytest.raises(EdranFusionError, match="unknown VGG16 layer"):
        vgg.VGG16Features(["relu9_9"])


def test_too_shallow_file_is_refused_for_a_deep_layer(npz_file: Path) -> None:
    with pytest.raises(EdranFusionError, match="lacks features.5.weight"):
        vgg.load_vgg16(npz_file, ["relu3_3"])


@pytest.mark.skipif(not SHARED_VGG.is_file(), reason=f"ImageNet VGG16 weights not present at {SHARED_VGG}")
def test_shared_imagenet_weights_load_and_respond_to_structure() -> None:
    features = vgg.load_vgg16(SHARED_VGG, ["relu3_3"])
    image = torch.zeros(1, 1, 32, 32)
    image[..., 8:24, 8:24] = 1.0
    out = features(image)["relu3_3"]
    assert out.shape == (1, 256, 8, 8) and (out >= 0).all() and out.std() > 0
    assert perceptual_loss(features, image * 0.5, image) > perceptual_loss(features, image * 0.95, image)
