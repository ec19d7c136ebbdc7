"""EH-DRAN architecture: shapes for any size, parameter count, the DRGO ablation switch, determinism."""

import pytest
import torch

from EdranFusionLib.network.model import EHDRAN, parameter_count


def test_parameter_count_matches_paper_scale():
    # Paper: 0.50 M. Separate pyramid paths + learned mask + residual DRGO land at 0.52 M.
    assert parameter_count(EHDRAN()) == 519_745
    assert abs(parameter_count(EHDRAN()) - 500_000) / 500_000 < 0.05


def test_ablation_without_drgo_drops_the_edge_branch():
    full, ablated = EHDRAN(), EHDRAN(use_drgo=False)
    assert not any(k.startswith("drgo.") for k in ablated.state_dict())
    assert parameter_count(full) - parameter_count(ablated) == 2 * (64 * 64 * 9 + 64) + 64 * 64 + 64


@pytest.mark.parametrize("size", [(8, 8), (33, 17), (64, 48), (101, 255)])
def test_latent_keeps_input_size_and_decoder_returns_one_channel(model, size):
    x = torch.rand(2, 1, *size)
    with torch.inference_mode():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (2, 64, *size)
    assert y.shape == (2, 1, *size)


def test_eval_mode_is_deterministic_and_batch_independent(model):
    x = torch.rand(3, 1, 40, 40)
    with torch.inference_mode():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
        again = model(x)
    assert torch.equal(together, again)
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_sobel_operator_is_fixed_not_trained():
    model = EHDRAN()
    assert "drgo.sobel.kernel" not in model.state_dict()
    assert all("sobel" not in name for name, _ in model.named_parameters())
