import pytest
import torch
from torch import nn

from codec.balancer import Balancer, BalancerConfig


def _losses(output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two losses on disjoint halves of the output with gradient scales 1000x apart."""
    half = output.shape[-1] // 2
    return {
        "big": 1000.0 * (output[..., :half] ** 2).sum(),
        "small": (output[..., half:] - 1).abs().mean(),
    }


@pytest.mark.parametrize("per_batch_item", [True, False])
def test_balanced_gradient_has_requested_proportions(per_batch_item):
    config = BalancerConfig(enabled=True, total_norm=2.0, ema_decay=0.9, per_batch_item=per_batch_item)
    balancer = Balancer({"big": 3.0, "small": 1.0}, config)
    output = torch.randn(1, 1, 64, requires_grad=True)
    gradient, norms = balancer(_losses(output), output)
    # The losses touch disjoint halves, so each half's norm is that loss's share: 2.0 * 3/4 and 2.0 * 1/4.
    assert gradient[..., :32].norm().item() == pytest.approx(1.5, rel=1e-5)
    assert gradient[..., 32:].norm().item() == pytest.approx(0.5, rel=1e-5)
    assert norms["big"].item() == pytest.approx(2000 * output[..., :32].norm().item(), rel=1e-5)


def test_balancer_uses_ema_of_norms_and_restores_it_from_state_dict():
    config = BalancerConfig(enabled=True, total_norm=1.0, ema_decay=0.5, per_batch_item=False)
    balancer = Balancer({"only": 1.0}, config)
    output = torch.ones(1, 1, 4, requires_grad=True)
    balancer({"only": output.sum()}, output)                 # gradient norm 2
    state = {k: v.clone() for k, v in balancer.state_dict().items()}
    gradient, norms = balancer({"only": 4 * output.sum()}, output)  # gradient norm 8
    # Bias-corrected EMA: (0.5 * 2 + 8) / (0.5 + 1) = 6, so the output gradient norm is 8 / 6.
    assert norms["only"].item() == pytest.approx(6.0)
    assert gradient.norm().item() == pytest.approx(8 / 6)
    restored = Balancer({"only": 1.0}, config)
    restored.load_state_dict(state)
    assert restored({"only": 4 * output.sum()}, output).norms["only"].item() == pytest.approx(6.0)


def test_disabled_balancer_equals_plain_weighted_sum():
    torch.manual_seed(0)
    generator = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv1d(4, 1, 3, padding=1))
    source = torch.randn(2, 1, 64)
    weights = {"big": 0.1, "small": 4.0}

    output = generator(source)
    balancer = Balancer(weights, BalancerConfig(enabled=False, total_norm=1.0, ema_decay=0.999, per_batch_item=True))
    gradient, norms = balancer(_losses(output), output)
    output.backward(gradient)
    balanced_grads = [p.grad.clone() for p in generator.parameters()]
    assert norms == {}

    generator.zero_grad()
    losses = _losses(generator(source))
    (0.1 * losses["big"] + 4.0 * losses["small"]).backward()
    for balanced, direct in zip(balanced_grads, generator.parameters()):
        torch.testing.assert_close(balanced, direct.grad)


def test_balancer_refuses_unweighted_loss_and_bad_decay():
    config = BalancerConfig(enabled=True, total_norm=1.0, ema_decay=0.999, per_batch_item=True)
    output = torch.ones(1, 1, 4, requires_grad=True)
    with pytest.raises(ValueError, match="no balancer weight"):
        Balancer({"mel": 1.0}, config)({"l1": output.sum()}, output)
    with pytest.raises(ValueError, match="ema_decay"):
        Balancer({"mel": 1.0}, BalancerConfig(enabled=True, total_norm=1.0, ema_decay=1.0, per_batch_item=True))
