import math

import pytest
import torch

from conditioners.attributes import ConditioningAttributes, WavCondition, collate_wavs
from conditioners.chroma import ChromaConditioner

SAMPLE_RATE, FRAME_RATE = 16000, 50
C4, E4, G4, A4 = 261.63, 329.63, 392.00, 440.0


def _conditioner(argmax: bool, output_dim: int = 8) -> ChromaConditioner:
    return ChromaConditioner(
        output_dim=output_dim, sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, n_fft=4096,
        min_frequency=65.0, max_frequency=4000.0, argmax=argmax,
    )


def _tone(frequencies: list[float], seconds: float, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    time = torch.arange(int(seconds * sample_rate)) / sample_rate
    return sum(torch.sin(2 * math.pi * frequency * time) for frequency in frequencies) / len(frequencies)


def test_chromagram_of_a_c_major_triad_peaks_at_c_e_and_g():
    chroma = _conditioner(argmax=False).chromagram(_tone([C4, E4, G4], seconds=1.0).unsqueeze(0))[0]  # [frames, 12]
    profile = chroma[5:-5].mean(dim=0)  # away from the edges
    assert set(profile.topk(3).indices.tolist()) == {0, 4, 7}
    others = profile[[1, 2, 3, 5, 6, 8, 9, 10, 11]]
    assert profile[[0, 4, 7]].min() > 3 * others.max()


def test_argmax_follows_a_melody_frame_by_frame_after_resampling():
    # C for 0.5 s then G for 0.5 s, given as stereo at 8 kHz: collation resamples to 16 kHz and mixes down.
    melody = torch.cat([_tone([C4], 0.5, 8000), _tone([G4], 0.5, 8000)]).expand(2, -1)
    batch = collate_wavs([ConditioningAttributes(wav={"melody": WavCondition(melody, 8000)})], "melody", SAMPLE_RATE)
    chroma = _conditioner(argmax=True).chromagram(batch.wav)[0]  # [frames, 12]
    classes = chroma.argmax(dim=-1)
    assert torch.equal(chroma.sum(dim=-1)[:50], torch.ones(50))
    assert (classes[5:20] == 0).all() and (classes[30:45] == 7).all()


def test_reference_is_tiled_or_cropped_to_the_target_length_and_missing_ones_are_masked():
    conditioner = _conditioner(argmax=True)
    melody = torch.cat([_tone([C4], 0.25), _tone([A4], 0.25)])  # two notes, so tiling and cropping are visible
    attributes = [
        ConditioningAttributes(wav={"melody": WavCondition(melody.unsqueeze(0), SAMPLE_RATE)}),
        ConditioningAttributes(),
    ]
    batch = collate_wavs(attributes, "melody", SAMPLE_RATE)
    own = conditioner(batch, seq_len=None)
    frames = 25  # 0.5 s at 50 Hz
    assert own.embeddings.shape[1] == frames and own.mask[0].all() and not own.mask[1].any()
    assert not torch.allclose(own.embeddings[0, 3], own.embeddings[0, 20])
    tiled = conditioner(batch, seq_len=60)
    steps = torch.arange(60)
    torch.testing.assert_close(tiled.embeddings[0], own.embeddings[0, steps % frames])
    assert tiled.mask[0].all() and not tiled.mask[1].any() and tiled.embeddings[1].abs().sum() == 0
    cropped = conditioner(batch, seq_len=10)
    torch.testing.assert_close(cropped.embeddings[0], own.embeddings[0, :10])


def test_frame_rate_that_is_not_a_whole_hop_is_refused():
    with pytest.raises(ValueError, match="frame_rate"):
        ChromaConditioner(
            output_dim=8, sample_rate=16000, frame_rate=48, n_fft=4096, min_frequency=65.0,
            max_frequency=4000.0, argmax=True,
        )


@pytest.mark.parametrize("options, message", [
    ({"filterbank": "gaussian"}, "min_frequency and max_frequency apply to filterbank 'nearest' only"),
    ({"filterbank": "cqt"}, "filterbank must be one of"),
    ({"argmax": False, "silent_frames": "argmax"}, "silent_frames 'argmax' needs argmax: true"),
    ({"length": 0}, "length must be >= 1"),
    ({"max_duration": 0.0}, "max_duration must be > 0"),
])
def test_inconsistent_reference_options_are_refused_by_name(options, message):
    settings = dict(output_dim=8, sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, n_fft=4096, min_frequency=65.0,
                    max_frequency=4000.0, argmax=True)
    with pytest.raises(ValueError, match=message):
        ChromaConditioner(**{**settings, **options})


def test_silent_frames_argmax_makes_silence_the_one_hot_on_c_and_zero_keeps_it_empty():
    silence = torch.zeros(1, SAMPLE_RATE // 10)  # 0.1 s, shorter than n_fft: zero-padded to it, as HF
    zero = _conditioner(argmax=True).chromagram(silence)
    argmax = ChromaConditioner(output_dim=8, sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, n_fft=4096,
                               min_frequency=65.0, max_frequency=4000.0, argmax=True,
                               silent_frames="argmax").chromagram(silence)
    assert zero.abs().sum() == 0
    assert torch.equal(argmax, torch.eye(12)[0].expand_as(argmax))
