"""The fuser: batching, progress, cancellation, precision, empty slices, and the input checks."""

import numpy as np
import pytest

from EdranFusionLib.errors import EdranFusionError, FusionCancelled
from EdranFusionLib.fusion.fuser import auto_batch_size, fuse_stacks, plan_fusion
from EdranFusionLib.network.model import EHDRAN


def _stacks(n=5, h=24, w=36, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, h, w), dtype=np.float32), rng.random((n, h, w), dtype=np.float32)


def test_output_in_unit_range_and_same_across_batch_sizes(model):
    a, b = _stacks()
    one = fuse_stacks(a, b, model, batch_size=1, precision="fp32", device="cpu")
    three = fuse_stacks(a, b, model, batch_size=3, precision="fp32", device="cpu")
    assert one.shape == a.shape and one.dtype == np.float32
    assert one.min() >= 0 and one.max() <= 1
    np.testing.assert_allclose(one, three, atol=1e-5)


def test_bf16_stays_close_to_fp32(model):
    a, b = _stacks(2, 48, 48)
    fp32 = fuse_stacks(a, b, model, precision="fp32", device="cpu")
    bf16 = fuse_stacks(a, b, model, precision="bf16", device="cpu")
    mse = float(np.mean((fp32 - bf16) ** 2))
    assert 10 * np.log10(1.0 / max(mse, 1e-12)) >= 40


def test_progress_reaches_one_and_is_monotonic(model):
    a, b = _stacks(7)
    seen = []
    fuse_stacks(a, b, model, batch_size=2, progress=seen.append, device="cpu")
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 4


def test_cancel_between_batches_raises(model):
    a, b = _stacks(6)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(FusionCancelled):
        fuse_stacks(a, b, model, batch_size=2, cancel=cancel, device="cpu")
    assert len(calls) == 2


def test_slices_empty_in_both_inputs_stay_zero(model):
    a, b = _stacks(4)
    a[[0, 3]] = 0
    b[[0, 3]] = 0
    out = fuse_stacks(a, b, model, device="cpu")
    assert not out[[0, 3]].any() and out[1:3].any()


def test_too_small_and_mismatched_inputs_are_rejected(model):
    a, b = _stacks(1, 7, 30)
    with pytest.raises(EdranFusionError, match="too small"):
        fuse_stacks(a, b, model)
    a, b = _stacks(1, 16, 16)
    with pytest.raises(EdranFusionError, match="differ in shape"):
        fuse_stacks(a, b[:, :, :8].copy(), model)


def test_plan_rejects_bad_settings():
    with pytest.raises(EdranFusionError, match="unknown strategy"):
        plan_fusion((32, 32), strategy="median")
    with pytest.raises(EdranFusionError, match="unknown precision"):
        plan_fusion((32, 32), precision="int8")
    with pytest.raises(EdranFusionError, match="batch size must be at least 1"):
        plan_fusion((32, 32), batch_size=0)


def test_auto_batch_shrinks_for_large_slices():
    import torch

    cpu = torch.device("cpu")
    assert auto_batch_size(64, 64, cpu, torch.float32) >= auto_batch_size(4096, 4096, cpu, torch.float32) >= 1


def test_ablation_model_fuses_too():
    a, b = _stacks(2)
    out = fuse_stacks(a, b, EHDRAN(use_drgo=False).eval(), device="cpu")
    assert out.shape == a.shape
