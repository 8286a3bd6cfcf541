"""Training-time condition dropout; draws from the given torch.Generator, or torch's default one (reseeded per step).

- Classifier-free-guidance dropout (Ho & Salimans 2022; MusicGen uses p = 0.3): with probability p an example loses
  every condition at once and sees `ConditionTensors.null()` — exactly what the sampler feeds its unconditional
  branch, so training and guidance agree.
- Attribute dropout: each named attribute is dropped on its own with its own probability (set to None before
  encoding), so the model also learns from partial descriptions (e.g. genre without mood).
"""
from dataclasses import replace

import torch

from conditioners.attributes import ConditioningAttributes


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {p}")


class ClassifierFreeDropout:
    """Draw which examples keep their conditions; the rest get the null condition via `ConditionTensors.where`."""

    def __init__(self, p: float):
        _check_probability("cfg_dropout", p)
        self.p = p

    def keep(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B] bool, True for examples that keep their conditions."""
        return torch.rand(batch_size, generator=generator) >= self.p


class AttributeDropout:
    """Set each named attribute of each example to None with its own probability (text and wave attributes)."""

    def __init__(self, probabilities: dict[str, float]):
        for name, p in probabilities.items():
            _check_probability(f"attribute dropout for {name!r}", p)
        self.probabilities = dict(probabilities)

    def __call__(
        self, attributes: list[ConditioningAttributes], generator: torch.Generator | None = None
    ) -> list[ConditioningAttributes]:
        """New attributes (the input is not modified) with dropped values set to None."""
        draws = torch.rand(len(attributes), len(self.probabilities), generator=generator)  # [B, attributes]
        dropped = []
        for example, row in zip(attributes, draws):
            drop = {name for (name, p), draw in zip(self.probabilities.items(), row.tolist()) if draw < p}
            dropped.append(
                replace(
                    example,
                    text={name: None if name in drop else value for name, value in example.text.items()},
                    wav={name: None if name in drop else value for name, value in example.wav.items()},
                )
            )
        return dropped
