import math

import pytest
import torch

from conditioners.attributes import ConditioningAttributes, WavCondition
from conditioners.dropout import AttributeDropout, ClassifierFreeDropout


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [0.2, 0.3])
def test_cfg_dropout_rate_matches_p_within_five_standard_errors(p):
    draws = 20000
    keep = ClassifierFreeDropout(p=p).keep(draws, generator=_generator())
    rate = 1 - keep.float().mean().item()
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / draws)


def test_cfg_dropout_is_reproducible_from_the_seed_and_exact_at_the_extremes():
    dropout = ClassifierFreeDropout(p=0.3)
    assert torch.equal(dropout.keep(64, _generator(1)), dropout.keep(64, _generator(1)))
    assert not torch.equal(dropout.keep(64, _generator(1)), dropout.keep(64, _generator(2)))
    assert ClassifierFreeDropout(p=0.0).keep(100, _generator()).all()
    assert not ClassifierFreeDropout(p=1.0).keep(100, _generator()).any()


def test_attribute_dropout_drops_each_attribute_at_its_own_rate_without_touching_the_input():
    reference = WavCondition(torch.zeros(1, 10), 16000)
    examples = [
        ConditioningAttributes(text={"genre": "rock", "mood": "happy", "description": "x"}, wav={"melody": reference})
        for _ in range(4000)
    ]
    dropped = AttributeDropout(probabilities={"genre": 0.5, "mood": 0.0, "melody": 0.2})(examples, _generator())
    genre_rate = sum(example.text["genre"] is None for example in dropped) / len(dropped)
    melody_rate = sum(example.wav["melody"] is None for example in dropped) / len(dropped)
    assert abs(genre_rate - 0.5) < 5 * math.sqrt(0.25 / 4000)
    assert abs(melody_rate - 0.2) < 5 * math.sqrt(0.16 / 4000)
    assert all(example.text["mood"] == "happy" and example.text["description"] == "x" for example in dropped)
    assert all(example.text["genre"] == "rock" and example.wav["melody"] is reference for example in examples)


def test_probabilities_outside_zero_one_are_refused():
    with pytest.raises(ValueError, match="genre"):
        AttributeDropout(probabilities={"genre": 1.5})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ClassifierFreeDropout(p=-0.1)
