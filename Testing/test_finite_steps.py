"""A training step with a non-finite loss or gradient is skipped, counted and, past a limit, a clear error: one
bad batch must not turn the weights into NaN."""

from __future__ import annotations

import pytest
import torch

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.training.finite_steps import MAX_SKIPPED_STEPS, FiniteSteps


def _layer_and_optimizer() -> tuple[torch.nn.Linear, torch.optim.Optimizer]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    return layer, torch.optim.Adam(layer.parameters(), lr=0.1)


def _backward(layer: torch.nn.Linear, scale: float) -> torch.Tensor:
    loss = layer(torch.ones(2, 3)).square().mean() * scale
    loss.backward()
    return loss


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_a_non_finite_loss_leaves_the_weights_and_the_optimizer_untouched(scale: float) -> None:
    layer, optimizer = _layer_and_optimizer()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    steps = FiniteSteps()
    assert not steps.step(optimizer, _backward(layer, scale), 1)
    assert steps.skipped == 1
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())
    assert not optimizer.state  # Adam's moments never saw the NaN


def test_a_finite_loss_with_a_non_finite_gradient_is_skipped_too() -> None:
    layer, optimizer = _layer_and_optimizer()
    loss = torch.sqrt(layer.bias * 0).sum()
    loss.backward()  # d sqrt(x)/dx at 0 is inf, times d(0 * bias)/d bias = 0: a NaN gradient of a finite loss
    assert torch.isfinite(loss)
    assert not FiniteSteps().step(optimizer, loss, 1)


def test_finite_steps_are_taken_and_too_many_skipped_steps_stop_the_run() -> None:
    layer, optimizer = _layer_and_optimizer()
    before = layer.weight.detach().clone()
    steps = FiniteSteps(skipped=MAX_SKIPPED_STEPS)
    assert steps.step(optimizer, _backward(layer, 1.0), 1)
    assert not torch.equal(before, layer.weight)
    optimizer.zero_grad()
    with pytest.raises(EdranFusionError, match="non-finite loss or gradient; lower --lr"):
        steps.step(optimizer, _backward(layer, float("nan")), 2)
