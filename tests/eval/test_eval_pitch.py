import pytest
import torch

from eval.pitch import ChromaConfig, chroma_cosine, chroma_frames, key_agreement
from tests.eval.synthetic_music import SAMPLE_RATE, cadence, midi_frequency, tone


def test_chroma_cosine_is_one_for_the_reference_and_lower_for_a_pitch_shifted_copy():
    reference = cadence(0, "major", 100, 6.0)  # C major
    for semitones in (1, 2, 5):  # C# / D / F major: the same music with other notes
        shifted = cadence(semitones, "major", 100, 6.0)
        same = chroma_cosine(reference, reference, SAMPLE_RATE).item()
        other = chroma_cosine(shifted, reference, SAMPLE_RATE).item()
        assert same == pytest.approx(1.0, abs=1e-6)
        assert other < 0.8, (semitones, other)  # measured 0.29 (1), 0.27 (2), 0.49 (5)


def test_chroma_cosine_ignores_loudness_and_frames_below_silence_db():
    music = cadence(9, "minor", 90, 4.0)
    assert chroma_cosine(0.3 * music, music, SAMPLE_RATE).item() == pytest.approx(1.0, abs=1e-6)
    # A second of two different notes 80 dB down (C and F#), then the same music.
    reference, estimate = (torch.cat([1e-4 * tone(midi_frequency(pitch), 1.0, "sine"), music]) for pitch in (60, 66))
    assert chroma_cosine(estimate, reference, SAMPLE_RATE).item() == pytest.approx(1.0, abs=1e-3)
    # Scored, the quiet frames (a fifth of the clip) disagree and pull the mean down.
    assert chroma_cosine(estimate, reference, SAMPLE_RATE, ChromaConfig(silence_db=120)).item() < 0.9
    config = ChromaConfig()
    assert chroma_frames(music, SAMPLE_RATE, config).shape == (music.shape[-1] // config.hop_length + 1, 12)


def test_chroma_cosine_scores_each_item_of_a_batch():
    reference = torch.stack([cadence(0, "major", 100, 3.0), cadence(7, "minor", 120, 3.0)])[:, None]  # [2, 1, T]
    estimate = torch.stack([reference[0], reference[0]])  # the second item gets the first's notes
    scores = chroma_cosine(estimate, reference, SAMPLE_RATE)
    assert scores.shape == (2,)
    assert scores[0].item() == pytest.approx(1.0, abs=1e-6) and scores[1].item() < 0.9
    with pytest.raises(ValueError, match="differ in shape"):
        chroma_cosine(estimate[..., :-1], reference, SAMPLE_RATE)


def test_key_agreement_is_one_for_the_reference_and_zero_for_another_key():
    reference = cadence(2, "major", 100, 6.0)  # D major
    assert key_agreement(reference, reference, SAMPLE_RATE) == 1.0
    assert key_agreement(0.5 * reference[None], reference[None], SAMPLE_RATE) == 1.0  # [C, T] and loudness
    assert key_agreement(cadence(8, "major", 100, 6.0), reference, SAMPLE_RATE) == 0.0  # Ab major
