import pytest
import torch

from eval.audio_metrics import mel_distance, si_sdr, stft_distance, visqol

SAMPLE_RATE = 16_000


def _music(seconds: float = 1.0) -> torch.Tensor:
    """A harmonic tone with a slow amplitude swell, [1, T]."""
    t = torch.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    tone = sum(0.2 / k * torch.sin(2 * torch.pi * 330 * k * t) for k in range(1, 6))
    return (tone * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))).reshape(1, -1)


def test_si_sdr_known_cases():
    reference = _music()
    noise = torch.randn_like(reference)
    assert si_sdr(reference, reference).item() > 80
    assert si_sdr(noise, reference).item() < -25  # independent noise: ~10 log10(1 / T)
    # Scale invariance: any gain on the estimate leaves the score unchanged.
    degraded = reference + 0.1 * noise
    assert si_sdr(3.0 * degraded, reference).item() == pytest.approx(si_sdr(degraded, reference).item(), abs=1e-3)
    # Independent noise at a 10 dB signal-to-noise ratio scores ~10 dB.
    scaled_noise = noise * reference.norm() / noise.norm() / 10 ** 0.5
    assert si_sdr(reference + scaled_noise, reference).item() == pytest.approx(10.0, abs=0.3)
    # Per-signal: a batch of two gives two scores.
    assert si_sdr(torch.stack([reference, noise]), torch.stack([reference, reference])).shape == (2, 1)


def test_spectral_distances_are_zero_for_identical_audio_and_grow_with_noise():
    reference = _music(0.5)
    noise = torch.randn_like(reference)
    for distance in (lambda e, r: mel_distance(e, r, SAMPLE_RATE), stft_distance):
        assert distance(reference, reference.clone()).item() == 0.0
        values = [distance(reference + level * noise, reference).item() for level in (0.001, 0.01, 0.1)]
        assert values[0] < values[1] < values[2], values


def test_visqol_is_near_five_for_identical_audio_and_lower_for_noisy_audio():
    reference = _music(1.0)
    clean = visqol(reference, reference, SAMPLE_RATE)
    noisy = visqol(reference + 0.05 * torch.randn_like(reference), reference, SAMPLE_RATE)
    assert clean > 4.5
    assert noisy < clean - 1.0
