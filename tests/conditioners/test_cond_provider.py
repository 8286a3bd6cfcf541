import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conditioners.attributes import ConditioningAttributes, WavCondition
from conditioners.conditioner import ConditionerConfig, ConditionProvider

CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs" / "conditioner")


def _config(preset: str, overrides: list[str] = ()) -> ConditionerConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return ConditionerConfig(**compose(config_name=preset, overrides=list(overrides)))


def _melody(seconds: float, sample_rate: int = 32000) -> WavCondition:
    """A for the first half, C for the second."""
    time = torch.arange(int(seconds * sample_rate)) / sample_rate
    frequency = torch.where(time < seconds / 2, 440.0, 261.63)
    return WavCondition(torch.sin(2 * math.pi * frequency * time).unsqueeze(0), sample_rate)


def test_text_and_melody_preset_routes_text_to_cross_and_chroma_to_prepend(tiny_t5_dir):
    config = _config("text_and_melody", [f"text.description.encoder={tiny_t5_dir}", "output_dim=16"])
    provider = ConditionProvider(config).eval()
    attributes = [
        ConditioningAttributes(text={"description": "a calm piano melody"}, wav={"melody": _melody(0.4)}),
        ConditioningAttributes(text={"description": None}),
    ]
    tensors = provider(attributes, seq_len=40)
    assert tensors.cross.shape[0] == 2 and tensors.cross.shape[2] == 16
    assert tensors.cross_mask[0].all() and not tensors.cross_mask[1].any()
    assert tensors.prepend.shape == (2, 40, 16) and tensors.add is None
    assert tensors.prepend[0].abs().sum() > 0 and tensors.prepend[1].abs().sum() == 0
    # 0.4 s = 20 frames (A then C) tiled to 40 steps: the second half repeats the first.
    torch.testing.assert_close(tensors.prepend[0, 20:], tensors.prepend[0, :20])
    assert not torch.allclose(tensors.prepend[0, 3], tensors.prepend[0, 16])


def test_different_descriptions_give_different_memories(tiny_t5_dir):
    provider = ConditionProvider(_config("minilm", [f"text.description.encoder={tiny_t5_dir}", "output_dim=16"]))
    provider.eval()
    first = provider([ConditioningAttributes(text={"description": "a calm piano melody"})])
    second = provider([ConditioningAttributes(text={"description": "a slow blues guitar solo"})])
    assert (first.cross.mean(dim=1) - second.cross.mean(dim=1)).abs().max() > 1e-3


def test_cfg_dropout_in_training_gives_exactly_the_null_condition_and_is_off_in_eval(tiny_t5_dir):
    overrides = [f"text.description.encoder={tiny_t5_dir}", "output_dim=16", "cfg_dropout=0.5"]
    provider = ConditionProvider(_config("minilm", overrides))
    texts = ["a calm piano melody", "epic orchestral music with brass and choir", "lofi hip hop beat"] * 6
    attributes = [ConditioningAttributes(text={"description": text}) for text in texts]
    reference = provider.eval()(attributes)
    trained = provider.train()(attributes)
    dropped = ~trained.cross_mask.any(dim=1)
    assert 0 < int(dropped.sum()) < len(texts)
    null = reference.null()
    assert torch.equal(trained.cross[dropped], null.cross[dropped])
    assert torch.equal(trained.cross_mask[dropped], null.cross_mask[dropped])
    assert torch.equal(trained.cross[~dropped], reference.cross[~dropped])
    assert torch.equal(provider.eval()(attributes).cross, reference.cross)


def test_lookup_and_text_conditions_share_the_cross_memory(tiny_t5_dir):
    config = ConditionerConfig(
        output_dim=16, cfg_dropout=0.0,
        text={"description": dict(encoder=tiny_t5_dir, pooling="mean", max_length=16, dtype="float32", cache_size=0)},
        lookup={"genre": dict(vocabulary=["rock", "jazz"])},
        fuser={"description": "cross", "genre": "cross"},
    )
    tensors = ConditionProvider(config)([ConditioningAttributes(text={"description": "blues", "genre": "polka"})])
    assert tensors.cross.shape == (1, 2, 16) and tensors.cross_mask.tolist() == [[True, False]]


def test_none_preset_is_unconditional():
    tensors = ConditionProvider(_config("none"))([ConditioningAttributes(text={"description": "ignored"})], seq_len=8)
    assert tensors.cross is None and tensors.prepend is None and tensors.add is None


def test_t5_base_preset_without_a_local_copy_explains_how_to_provide_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder:"):
        ConditionProvider(_config("t5_base", [f"text.description.encoder={tmp_path / 't5-base'}"]))


def test_config_typos_and_unrouted_conditions_fail_at_construction():
    with pytest.raises(TypeError, match="pooling_mode"):
        ConditionerConfig(
            output_dim=8, cfg_dropout=0.0, fuser={"description": "cross"},
            text={"description": dict(encoder="minilm", pooling_mode="mean", max_length=8, dtype="float32", cache_size=0)},
        )
    with pytest.raises(ValueError, match="fuser"):
        ConditionerConfig(output_dim=8, cfg_dropout=0.0, lookup={"genre": dict(hash_buckets=8)})
