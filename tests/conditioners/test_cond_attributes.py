import pytest
import torch

from conditioners.attributes import ConditioningAttributes, WavCondition, collate_texts, collate_wavs


def test_texts_collate_to_strings_with_missing_and_blank_values_as_none():
    examples = [
        ConditioningAttributes(text={"bpm": 120}),
        ConditioningAttributes(text={"bpm": "  "}),
        ConditioningAttributes(text={"genre": "rock"}),
        ConditioningAttributes(text={"bpm": " 96 "}),
    ]
    assert collate_texts(examples, "bpm") == ["120", None, None, "96"]


def test_waves_collate_to_padded_mono_at_the_target_rate():
    stereo = torch.stack([torch.ones(4000), -torch.ones(4000) * 0.5])  # 0.5 s at 8 kHz, mean 0.25
    examples = [
        ConditioningAttributes(wav={"melody": WavCondition(stereo, 8000)}),
        ConditioningAttributes(wav={"melody": None}),
        ConditioningAttributes(wav={"melody": WavCondition(torch.full((1, 3000), 0.5), 16000)}),
    ]
    batch = collate_wavs(examples, "melody", sample_rate=16000)
    assert batch.lengths.tolist() == [8000, 0, 3000] and batch.wav.shape == (3, 8000)
    torch.testing.assert_close(batch.wav[0, 1000:7000], torch.full((6000,), 0.25), atol=1e-3, rtol=0)
    assert batch.wav[1].abs().sum() == 0 and batch.wav[2, 3000:].abs().sum() == 0


def test_a_reference_that_is_not_channels_by_time_is_refused():
    with pytest.raises(ValueError, match=r"\[C, T\]"):
        WavCondition(torch.zeros(100), 16000)
