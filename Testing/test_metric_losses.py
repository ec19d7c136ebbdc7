"""The differentiable FSIM and Qabf of the stage-2 loss agree with the evaluation's reference metrics on real
images, carry gradients, and enter the fusion loss only when weighed."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import SAMPLE_DIR

from EdranFusionLib.evaluation.metrics import fsim, qabf
from EdranFusionLib.network import metric_losses
from EdranFusionLib.network.fusion_losses import FusionLoss


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """The middle axial slice of the bundled stroke T2 and FLAIR volumes, each scaled to 0..255."""
    slices = []
    for name in ("T2", "FLAIR"):
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_DIR / f"{name}.nii.gz"))).astype(np.float64)
        middle = volume[volume.shape[0] // 2]
        slices.append(np.rint(255 * middle / middle.max()).astype(np.uint8))
    return tuple(slices)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255)[None, None]


def test_torch_fsim_and_qabf_match_the_reference_metrics(pair) -> None:
    a, b = pair
    for fused in (np.maximum(a, b), ((a.astype(int) + b) // 2).astype(np.uint8)):
        assert float(metric_losses.fsim(_tensor(fused), _tensor(a))[0]) == pytest.approx(fsim(a, fused), abs=1e-3)
        assert float(metric_losses.qabf(_tensor(fused), _tensor(a), _tensor(b))[0]) == pytest.approx(
            qabf(fused, a, b), abs=2e-3)


def test_they_carry_gradients_and_reward_the_sources_structure(pair) -> None:
    a, b = (_tensor(x)[..., 40:104, 40:104] for x in pair)
    fused = ((a + b) / 2).requires_grad_(True)
    score = metric_losses.fsim(fused, a).mean() + metric_losses.qabf(fused, a, b).mean()
    score.backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    blurred = torch.nn.functional.avg_pool2d(a, 5, stride=1, padding=2)
    assert float(metric_losses.fsim(a, a)[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(metric_losses.fsim(blurred, a)[0]) < 0.95


def test_the_loss_adds_fsim_and_qabf_only_when_weighed(pair) -> None:
    a, b = (_tensor(x)[..., 40:104, 40:104] for x in pair)
    fused = torch.maximum(a, b)
    plain_total, plain = FusionLoss()(fused, a, b)
    total, parts = FusionLoss(fsim_weight=2.0, qabf_weight=3.0)(fused, a, b)
    assert set(plain) == {"total", "psnr", "ssim", "edges"} and {"fsim", "qabf"} <= set(parts)
    expected = float(plain_total) + 2 * (1 - parts["fsim"]) + 3 * (1 - parts["qabf"])
    assert float(total) == pytest.approx(expected, abs=1e-5)
