"""Objective reconstruction metrics, computed offline, as DAC reports them (paper Table 3, `scripts/evaluate.py`).

All functions compare an `estimate` with a `reference` of the same shape [..., T] at the same sample rate.
- `si_sdr`: scale-invariant signal-to-distortion ratio in dB, per signal (higher is better).
- `mel_distance`: DAC's 7-scale mel loss, windows 32..2048, L1 on log10 mel, summed over scales (lower is better).
- `stft_distance`: DAC's multi-resolution STFT loss, windows 2048 and 512, L1 on log10 power plus L1 on
  magnitude, summed over scales (lower is better).
- `visqol`: ViSQOL v3 audio mode MOS-LQO (1..5, higher is better) through `visqol-python`, at 48 kHz, mono.
"""
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor

from codec.losses import MelLossConfig, MultiScaleMelLoss
from data.audio import resample

DAC_MEL_DISTANCE = MelLossConfig(
    window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
    n_mels=[5, 10, 20, 40, 80, 160, 320],
    linear_l1_weight=0.0,
    log_l1_weight=1.0,
    log_l2_weight=0.0,
)
STFT_DISTANCE_WINDOWS = (2048, 512)
VISQOL_SAMPLE_RATE = 48_000


def si_sdr(estimate: Tensor, reference: Tensor, epsilon: float = 1e-8) -> Tensor:
    """[..., T], [..., T] -> [...] in dB. Both signals are made zero-mean; the reference is rescaled by the
    least-squares gain onto the estimate, so scaling the estimate does not change the score."""
    _check_same_shape(estimate, reference)
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    gain = (estimate * reference).sum(dim=-1, keepdim=True) / (reference.pow(2).sum(dim=-1, keepdim=True) + epsilon)
    target = gain * reference
    distortion = estimate - target
    return 10 * torch.log10((target.pow(2).sum(dim=-1) + epsilon) / (distortion.pow(2).sum(dim=-1) + epsilon))


def mel_distance(estimate: Tensor, reference: Tensor, sample_rate: int) -> Tensor:
    """[..., T], [..., T] -> scalar: DAC's multi-scale log-mel L1 distance."""
    _check_same_shape(estimate, reference)
    loss = MultiScaleMelLoss(sample_rate, DAC_MEL_DISTANCE).to(estimate.device)
    return loss(_as_batch(estimate), _as_batch(reference))


def stft_distance(estimate: Tensor, reference: Tensor, floor: float = 1e-5) -> Tensor:
    """[..., T], [..., T] -> scalar: DAC's multi-resolution STFT distance (log10 power L1 + magnitude L1)."""
    _check_same_shape(estimate, reference)
    distance = estimate.new_zeros(())
    for window in STFT_DISTANCE_WINDOWS:
        spectrogram = torchaudio.transforms.Spectrogram(n_fft=window, hop_length=window // 4, power=1.0)
        spectrogram = spectrogram.to(estimate.device)
        magnitude_estimate, magnitude_reference = spectrogram(estimate), spectrogram(reference)
        distance = distance + F.l1_loss(
            magnitude_estimate.clamp(min=floor).pow(2).log10(), magnitude_reference.clamp(min=floor).pow(2).log10()
        )
        distance = distance + F.l1_loss(magnitude_estimate, magnitude_reference)
    return distance


def visqol(estimate: Tensor, reference: Tensor, sample_rate: int) -> float:
    """[C, T], [C, T] -> ViSQOL audio-mode MOS-LQO; channels are averaged to mono and resampled to 48 kHz.
    Needs the `visqol-python` package (about 1.3 s of CPU per second of audio)."""
    from visqol import VisqolApi  # optional dependency, imported only when ViSQOL is asked for

    _check_same_shape(estimate, reference)
    estimate_48k, reference_48k = (
        resample(wav.detach().float().mean(dim=0).cpu(), sample_rate, VISQOL_SAMPLE_RATE).double().numpy()
        for wav in (estimate, reference)
    )
    api = VisqolApi()
    api.create(mode="audio")
    return float(api.measure_from_arrays(reference_48k, estimate_48k, VISQOL_SAMPLE_RATE).moslqo)


def _as_batch(wav: Tensor) -> Tensor:
    """[T] or [C, T] or [B, C, T] -> [B, C, T]."""
    while wav.dim() < 3:
        wav = wav.unsqueeze(0)
    return wav


def _check_same_shape(estimate: Tensor, reference: Tensor) -> None:
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must have the same shape, got {estimate.shape} and {reference.shape}")
