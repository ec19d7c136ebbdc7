"""The fast paths give the results of the plain ones: the inference form of the model, concurrent workers,
the SFNN arithmetic, the CPU batch rule and the out-of-memory retry. No timing assertions (see benchmark.py)."""

import numpy as np
import pytest
import torch

from EdranFusionLib.benchmarks import speed as benchmark
from EdranFusionLib.fusion import fuser
from EdranFusionLib.fusion.fuser import auto_batch_size, fuse_stacks
from EdranFusionLib.fusion.rules import fuse_latents
from EdranFusionLib.fusion.sfnn import nuclear_norms, sfnn_weights
from EdranFusionLib.network.model import EHDRAN, fold_for_inference


def _trained_looking(use_drgo: bool = True) -> EHDRAN:
    """A seeded model whose BatchNorm statistics are not the identity, so folding them is really exercised."""
    torch.manual_seed(1)
    model = EHDRAN(use_drgo=use_drgo).eval()
    norm = model.multiscale.norm
    with torch.no_grad():
        norm.running_mean.uniform_(-0.2, 0.2)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize(
    ("use_drgo", "size", "memory_format"),
    [(True, (33, 17), torch.channels_last), (True, (48, 64), torch.contiguous_format),
     (False, (33, 17), torch.contiguous_format)],
)
def test_inference_form_equals_the_model(use_drgo, size, memory_format):
    model = _trained_looking(use_drgo)
    fast = fold_for_inference(model).to(memory_format=memory_format)
    x = torch.rand(2, 1, *size)
    with torch.inference_mode():
        reference_latent, fast_latent = model.encode(x), fast.encode(x.contiguous(memory_format=memory_format))
        reference, result = model.decode(reference_latent), fast.decode(fast_latent)
    torch.testing.assert_close(fast_latent, reference_latent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-5)


def test_folding_leaves_the_model_and_its_keys_alone():
    model = _trained_looking()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fold_for_inference(model)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)


def test_inference_form_in_bf16_stays_within_40_db_of_fp32():
    model = _trained_looking()
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        fp32 = model(x).clamp(0, 1)
        fast = fold_for_inference(model).to(torch.bfloat16, memory_format=torch.channels_last)
        bf16 = fast.decode(fast.encode(x.to(torch.bfloat16))).float().clamp(0, 1)
    mse = float(torch.mean((fp32 - bf16) ** 2))
    assert 10 * np.log10(1.0 / max(mse, 1e-12)) >= 40


def test_workers_give_the_same_result_and_restore_threads(model):
    rng = np.random.default_rng(3)
    a, b = (rng.random((5, 24, 20), dtype=np.float32) for _ in range(2))
    threads = torch.get_num_threads()
    one = fuse_stacks(a, b, model, precision="fp32", device="cpu", batch_size=2, workers=1)
    three = fuse_stacks(a, b, model, precision="fp32", device="cpu", batch_size=2, workers=3)
    np.testing.assert_array_equal(one, three)
    assert torch.get_num_threads() == threads


def test_sfnn_fusion_in_bf16_matches_the_float32_formula():
    fa, fb = (torch.randn(2, 8, 12, 10).to(torch.bfloat16) for _ in range(2))
    wa, wb = sfnn_weights(fa, fb, "max")
    expected = (wa * fa.float() + wb * fb.float()).to(torch.bfloat16)
    assert torch.equal(fuse_latents(fa, fb, "sfnn-max"), expected)


def test_gram_nuclear_norms_of_softmax_maps_within_1e4_of_float64_svd():
    maps = torch.softmax(3 * torch.randn(2, 16, 96, 80, generator=torch.Generator().manual_seed(0)), dim=1)
    exact = torch.linalg.svdvals(maps.double()).sum(-1)
    threads = torch.get_num_threads()
    assert float(((nuclear_norms(maps).double() - exact).abs() / exact).max()) < 1e-4
    assert torch.get_num_threads() == threads  # the eigenvalue split restores torch's threads


def test_cpu_batches_stay_near_32k_pixels():
    cpu = torch.device("cpu")
    assert auto_batch_size(256, 256, cpu, torch.bfloat16) == 1
    assert auto_batch_size(64, 64, cpu, torch.bfloat16) == 8


def test_out_of_memory_halves_the_batch_then_falls_back_with_a_warning(model, monkeypatch):
    rng = np.random.default_rng(4)
    a, b = (rng.random((5, 16, 16), dtype=np.float32) for _ in range(2))
    expected = fuse_stacks(a, b, model, precision="fp32", device="cpu", batch_size=1, workers=1)
    real_call = fuser._Runner.__call__
    failures = []

    def flaky(self, x, y):
        if self.plan.batch_size > 1 or 1 not in failures:  # every batch above 1, then one batch of 1
            failures.append(self.plan.batch_size)
            raise torch.cuda.OutOfMemoryError("simulated")
        return real_call(self, x, y)

    monkeypatch.setattr(fuser._Runner, "__call__", flaky)
    monkeypatch.setattr(fuser, "resolve_precision", lambda _name, _device: torch.float32)
    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        result = fuse_stacks(a, b, model, precision="fp32", device="cpu", batch_size=4, workers=2)
    assert sorted(set(failures), reverse=True) == [4, 2, 1] and failures[-1] == 1
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_benchmark_counts_the_model_flops_and_the_inference_form_saves_some():
    model = EHDRAN().eval()
    reference, folded = benchmark.model_flops(model), benchmark.model_flops(fold_for_inference(model))
    assert 100e9 < reference < 150e9  # 2 encodes + 1 decode of 256x256, about 122 GFLOP
    assert folded < reference
