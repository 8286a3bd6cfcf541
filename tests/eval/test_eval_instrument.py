import torch

from eval.instrument import (InstrumentConfig, LogMelStatistics, fingerprint, load_cached_classifier,
                             save_classifier, train_classifier)
from tests.eval.synthetic_music import SAMPLE_RATE, tone

CONFIG = InstrumentConfig(n_fft=1024, hop_length=256, n_mels=64, hidden=32, steps=150, lr=0.01, weight_decay=1e-4,
                          seed=0)
TIMBRES = ("harmonic", "sine", "square")  # 4, 1 and all odd partials


def _clips(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """count clips per timbre, 1 s each, random pitch (110-880 Hz) and level (-30..0 dB)."""
    generator = torch.Generator().manual_seed(seed)
    clips, labels = [], []
    for timbre in TIMBRES:
        for _ in range(count):
            frequency = 110 * 2 ** (3 * torch.rand(1, generator=generator).item())
            gain = 10 ** (-1.5 * torch.rand(1, generator=generator).item())
            clips.append(gain * tone(frequency, 1.0, timbre))
            labels.append(timbre)
    return torch.stack(clips), labels


def test_classifier_separates_three_timbres_on_held_out_clips():
    features = LogMelStatistics(CONFIG, SAMPLE_RATE)
    train_wavs, train_labels = _clips(20, seed=0)
    test_wavs, test_labels = _clips(10, seed=1)
    classifier = train_classifier(features(train_wavs), train_labels, CONFIG)
    predictions = classifier.predict(features(test_wavs))
    accuracy = sum(p == t for p, t in zip(predictions, test_labels)) / len(test_labels)
    assert accuracy >= 0.9  # chance is 1/3
    assert classifier.labels == sorted(TIMBRES)
    assert classifier.embed(features(test_wavs)).shape == (30, CONFIG.hidden)


def test_features_do_not_depend_on_the_level():
    features = LogMelStatistics(CONFIG, SAMPLE_RATE)
    wav = tone(220.0, 1.0, "square")[None]
    assert torch.allclose(features(wav), features(0.01 * wav), atol=1e-3)
    assert not torch.allclose(features(wav), features(tone(220.0, 1.0, "sine")[None]), atol=1e-1)


def test_cached_classifier_is_reused_only_for_the_same_training(tmp_path):
    features = LogMelStatistics(CONFIG, SAMPLE_RATE)
    wavs, labels = _clips(4, seed=2)
    classifier = train_classifier(features(wavs), labels, CONFIG)
    key = fingerprint(CONFIG, SAMPLE_RATE, 1.0, ["a.wav", "b.wav"])
    save_classifier(classifier, tmp_path / "classifier.pt", key)
    loaded = load_cached_classifier(tmp_path / "classifier.pt", key, CONFIG)
    assert torch.equal(loaded(features(wavs)), classifier(features(wavs)))
    other = fingerprint(CONFIG, SAMPLE_RATE, 1.0, ["a.wav"])
    assert load_cached_classifier(tmp_path / "classifier.pt", other, CONFIG) is None
    assert load_cached_classifier(tmp_path / "missing.pt", key, CONFIG) is None
