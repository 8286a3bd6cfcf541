import pytest
import torch

from eval.key_tempo import (KeyConfig, TempoConfig, bpm_matches, estimate_bpm, estimate_key, key_label, key_matches,
                            parse_key, pitch_class_profile)
from tests.eval.synthetic_music import SAMPLE_RATE, cadence, tone

KEY = KeyConfig(n_fft=4096, hop_length=2048, min_frequency=60.0, max_frequency=1000.0)  # configs/adherence.yaml
TEMPO = TempoConfig(n_fft=1024, hop_length=256, min_bpm=40.0, max_bpm=240.0, tolerance=0.08)


@pytest.mark.parametrize("name", ["C major", "A minor", "F# major", "Eb minor", "Bb major", "G# minor", "E major",
                                  "D minor"])
def test_key_of_a_synthesized_cadence_is_recovered_exactly(name):
    key = parse_key(name)
    wav = cadence(*key, bpm=120, seconds=6.0)
    assert key_label(estimate_key(wav, SAMPLE_RATE, KEY)) == key_label(key)


def test_pitch_class_profile_of_a_single_a440_peaks_at_a():
    profile = pitch_class_profile(tone(440.0, 2.0, timbre="sine"), SAMPLE_RATE, KEY)
    others = torch.cat([profile[:9], profile[10:]])
    assert profile[9] > 0.5 and others.max() < 0.1 and abs(profile.sum() - 1) < 1e-5


def test_key_names_parse_with_either_spelling_and_reject_the_rest():
    assert parse_key("C# minor") == parse_key("Db Minor") == (1, "minor")
    assert parse_key("Bb major") == (10, "major") and parse_key("B major") == (11, "major")
    assert parse_key("Cb major") == (11, "major")
    assert parse_key("None") is None and parse_key("G") is None and parse_key("H major") is None


def test_lenient_key_match_accepts_exactly_the_related_keys():
    target = parse_key("C major")
    related = ["C minor", "A minor", "G major", "F major"]  # parallel, relative, fifth above, fifth below
    unrelated = ["F# major", "D major", "E minor", "G minor", "C# major"]
    assert all(key_matches(parse_key(name), target, lenient=True) for name in related)
    assert not any(key_matches(parse_key(name), target, lenient=False) for name in related)
    assert not any(key_matches(parse_key(name), target, lenient=True) for name in unrelated)
    assert key_matches(parse_key("C# minor"), parse_key("E major"), lenient=True)  # relative minor of E major


@pytest.mark.parametrize("bpm", [60, 84, 100, 132, 176])
def test_tempo_of_a_note_train_is_recovered(bpm):
    wav = cadence(tonic=2, mode="major", bpm=bpm, seconds=6.0)
    estimate = estimate_bpm(wav, SAMPLE_RATE, TEMPO)
    assert bpm_matches(estimate, bpm, tolerance=0.03)  # tighter than the 8% the command allows
    assert not bpm_matches(estimate, 1.5 * bpm, tolerance=0.08)


def test_clicks_at_50_bpm_are_found_at_the_beat_or_its_double():
    click = tone(2000.0, 0.02, timbre="sine")
    wav = torch.zeros(8 * SAMPLE_RATE)
    for start in range(0, len(wav) - len(click), int(1.2 * SAMPLE_RATE)):  # 50 bpm
        wav[start:start + len(click)] = click
    estimate = estimate_bpm(wav, SAMPLE_RATE, TEMPO)
    assert min(abs(estimate - 50), abs(estimate - 100)) < 1.5


def test_tempo_rule_allows_octave_errors_only():
    assert bpm_matches(120 * 1.07, 120, 0.08) and not bpm_matches(120 * 1.09, 120, 0.08)
    assert bpm_matches(240, 120, 0.08) and bpm_matches(61, 120, 0.08)
    assert not bpm_matches(180, 120, 0.08) and not bpm_matches(80, 120, 0.08) and not bpm_matches(360, 120, 0.08)


def test_tempo_of_a_clip_shorter_than_the_slowest_beat_is_refused():
    with pytest.raises(ValueError, match="too short"):
        estimate_bpm(tone(440.0, 2.9), SAMPLE_RATE, TEMPO)  # 40 bpm needs 3 s
