"""Fusion rules on known inputs: weights, symmetry, nuclear norm identities, dtype/device preservation."""

import pytest
import torch

from EdranFusionLib.choices import LATENT_RULES
from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.fusion.rules import fuse_latents
from EdranFusionLib.fusion.sfnn import nuclear_norms, nuclear_norms_svd, sfnn_weights


def _latents(seed: int, shape=(3, 64, 24, 40)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(5, 32, 32), (4, 20, 50), (3, 50, 20)])
def test_nuclear_norm_gram_route_agrees_with_svd(shape):
    maps = torch.softmax(torch.randn(shape[0], 64, *shape[1:]), dim=1)
    svd, gram = nuclear_norms_svd(maps.double()), nuclear_norms(maps)
    assert ((gram.double() - svd).abs() / svd).max() < 1e-4


def test_nuclear_norm_of_known_matrix():
    diag = torch.diag(torch.tensor([3.0, 2.0, 0.5]))
    assert nuclear_norms(diag).item() == pytest.approx(5.5, rel=1e-5)


@pytest.mark.parametrize("phi", ["max", "mean", "sum", "identity"])
def test_equal_inputs_get_weight_one_half(phi):
    f = _latents(0)
    wa, wb = sfnn_weights(f, f.clone(), phi)
    torch.testing.assert_close(wa, torch.full_like(wa, 0.5))
    torch.testing.assert_close(wb, torch.full_like(wb, 0.5))


@pytest.mark.parametrize("phi", ["max", "mean", "sum", "identity"])
def test_swapping_inputs_swaps_weights_and_weights_sum_to_one(phi):
    fa, fb = _latents(1), 3 * _latents(2)
    wa, wb = sfnn_weights(fa, fb, phi)
    wb2, wa2 = sfnn_weights(fb, fa, phi)
    torch.testing.assert_close(wa, wa2)
    torch.testing.assert_close(wb, wb2)
    torch.testing.assert_close(wa + wb, torch.ones_like(wa))
    assert wa.shape == ((3, 64, 1, 1) if phi == "identity" else (3, 1, 1, 1))


def test_sfnn_max_follows_equation_2_without_squaring():
    fa, fb = _latents(3), _latents(4) * 0.2
    na = nuclear_norms(torch.softmax(fa, 1)).amax(1)
    nb = nuclear_norms(torch.softmax(fb, 1)).amax(1)
    wa, _ = sfnn_weights(fa, fb, "max")
    torch.testing.assert_close(wa.flatten(), na / (na + nb))


def test_mean_and_sum_give_identical_weights():
    fa, fb = _latents(5), _latents(6)
    torch.testing.assert_close(sfnn_weights(fa, fb, "mean")[0], sfnn_weights(fa, fb, "sum")[0])


def test_weights_are_per_sample_in_a_batch():
    fa, fb = _latents(7), _latents(8)
    wa_batch, _ = sfnn_weights(fa, fb, "max")
    wa_single = torch.cat([sfnn_weights(fa[i : i + 1], fb[i : i + 1], "max")[0] for i in range(3)])
    torch.testing.assert_close(wa_batch, wa_single)


def test_elementwise_rules_on_known_values():
    fa = torch.tensor([3.0, 0.0, -2.0, 0.0]).view(1, 4, 1, 1)
    fb = torch.tensor([4.0, 5.0, 2.0, 0.0]).view(1, 4, 1, 1)
    fer = fuse_latents(fa, fb, "fer").flatten()
    torch.testing.assert_close(fer, torch.tensor([(27 + 64) / 25, 5.0, 0.0, 0.0]))
    fl1n = fuse_latents(fa, fb, "fl1n").flatten()
    torch.testing.assert_close(fl1n, torch.tensor([(9 + 16) / 7, 5.0, 0.0, 0.0]))
    torch.testing.assert_close(fuse_latents(fa, fb, "average").flatten(), torch.tensor([3.5, 2.5, 0.0, 0.0]))
    torch.testing.assert_close(fuse_latents(fa, fb, "max").flatten(), torch.tensor([4.0, 5.0, 2.0, 0.0]))


@pytest.mark.parametrize("strategy", [*LATENT_RULES, "activity-p0", "activity-p0.5", "activity-p1.5"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_rule_keeps_shape_dtype_and_is_symmetric(strategy, dtype):
    fa, fb = _latents(9).to(dtype), _latents(10).to(dtype)
    fused = fuse_latents(fa, fb, strategy)
    assert fused.shape == fa.shape and fused.dtype == dtype and fused.device == fa.device
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(fused.float(), fuse_latents(fb, fa, strategy).float(), rtol=tolerance, atol=tolerance)


def test_unknown_strategy_is_a_user_error():
    with pytest.raises(EdranFusionError, match="unknown strategy 'sfnn-median'"):
        fuse_latents(_latents(0), _latents(1), "sfnn-median")
