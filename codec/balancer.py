"""EnCodec's loss balancer (Défossez et al. 2022, "High Fidelity Neural Audio Compression", section 3.4).

With a plain weighted sum, the weight of a loss says nothing about how much it moves the model: an adversarial
loss with a gradient 100x larger than the mel loss's dominates whatever the weights are. The balancer works on
the gradient of each loss with respect to the generator output y (the decoded waveform):

    g_i = d loss_i / d y,     n_i = EMA over steps of ||g_i||,
    dL/dy = total_norm * sum_i (w_i / sum_j w_j) * g_i / n_i

so loss i contributes a fraction w_i / sum_j w_j of the gradient norm reaching y, whatever its scale. The model is
then updated by back-propagating dL/dy from y: `output.backward(gradient)`.

With `enabled: false` the same call returns the gradient of the plain weighted sum sum_i w_i * loss_i.
Losses that do not depend on y (the quantizer's commitment and codebook losses) are not balanced: the caller adds
them separately with their plain weights.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn


@dataclass
class BalancerConfig:
    enabled: bool             # false: plain weighted sum of the losses
    total_norm: float         # gradient norm reaching the generator output (EnCodec 1.0)
    ema_decay: float          # EMA of each loss's gradient norm across steps (EnCodec 0.999)
    per_batch_item: bool      # norms per batch item, then averaged (EnCodec true) rather than over the whole batch
    epsilon: float = 1e-12    # guards the division by a norm


class BalancedGradient(NamedTuple):
    gradient: Tensor           # [B, C, T] gradient to back-propagate from the generator output
    norms: dict[str, Tensor]   # EMA gradient norm of each loss (empty when the balancer is disabled)


class Balancer(nn.Module):
    """Turns weighted losses into one gradient for the generator output; its EMA state is in `state_dict()`."""

    def __init__(self, weights: dict[str, float], config: BalancerConfig):
        super().__init__()
        if any(weight < 0 for weight in weights.values()):
            raise ValueError(f"balancer weights must be >= 0, got {weights}")
        if not 0 <= config.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
        if config.total_norm <= 0:
            raise ValueError(f"total_norm must be > 0, got {config.total_norm}")
        self.weights = dict(weights)
        self.config = config
        self.names = list(weights)
        # Bias-corrected EMA, per loss: average = decayed sum of norms / decayed count of steps.
        self.register_buffer("norm_sums", torch.zeros(len(self.names)))
        self.register_buffer("step_counts", torch.zeros(len(self.names)))

    def forward(self, losses: dict[str, Tensor], output: Tensor) -> BalancedGradient:
        """losses: scalars computed from `output` [B, ...]; returns the gradient to push back from `output`.

        `losses` may hold a subset of the weighted names (e.g. no adversarial terms before the discriminator
        starts); fractions are then taken among the losses present.
        """
        unknown = set(losses) - set(self.weights)
        if unknown:
            raise ValueError(f"losses {sorted(unknown)} have no balancer weight; weighted names are {self.names}")
        if not self.config.enabled:
            weighted_sum = sum(self.weights[name] * loss for name, loss in losses.items())
            (gradient,) = torch.autograd.grad(weighted_sum, output, retain_graph=True)
            return BalancedGradient(gradient, {})

        total_weight = sum(self.weights[name] for name in losses)
        gradient = torch.zeros_like(output)
        norms = {}
        for name, loss in losses.items():
            (loss_gradient,) = torch.autograd.grad(loss, output, retain_graph=True)
            index = self.names.index(name)
            with torch.no_grad():
                norm = self._gradient_norm(loss_gradient)
                self.norm_sums[index] = self.config.ema_decay * self.norm_sums[index] + norm
                self.step_counts[index] = self.config.ema_decay * self.step_counts[index] + 1
                average_norm = self.norm_sums[index] / self.step_counts[index]
                fraction = self.weights[name] / total_weight
                gradient += self.config.total_norm * fraction / (average_norm + self.config.epsilon) * loss_gradient
            norms[name] = average_norm
        return BalancedGradient(gradient, norms)

    def _gradient_norm(self, gradient: Tensor) -> Tensor:
        if self.config.per_batch_item:
            return gradient.flatten(start_dim=1).norm(dim=1).mean()
        return gradient.norm()
