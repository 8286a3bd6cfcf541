"""Reconstruction and adversarial losses for training the codec as a GAN.

Reconstruction: a multi-scale mel-spectrogram loss (EnCodec uses 5 scales, windows 64..1024, L1 on the mel plus
L2 on the log-mel; DAC uses 7 scales, windows 32..2048, L1 on the log10-mel), next to the waveform L1, which is
plain `torch.nn.functional.l1_loss`.
Adversarial: hinge (EnCodec, MelGAN) or least squares (DAC, HiFi-GAN) on discriminator logits, plus L1 feature
matching on the discriminator's hidden activations.

Every adversarial function takes one entry per sub-discriminator (one STFT scale, one MPD period, ...) and
averages over them, so adding a scale does not change the loss magnitude.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

ADVERSARIAL_LOSSES = ("hinge", "least_squares")


@dataclass
class MelLossConfig:
    """Multi-scale mel loss; one scale per window length, hop = window / 4, FFT size = window."""

    window_lengths: list[int]   # e.g. DAC [32, 64, ..., 2048]
    n_mels: list[int]           # mel bands per scale, same length as window_lengths
    linear_l1_weight: float     # L1 on the mel magnitude (EnCodec 1, DAC 0)
    log_l1_weight: float        # L1 on log10 of the mel (EnCodec 0, DAC 1)
    log_l2_weight: float        # L2 (MSE) on log10 of the mel (EnCodec 1, DAC 0)
    floor: float = 1e-5         # clamp before the log (DAC and AudioCraft both use 1e-5)


class MultiScaleMelLoss(nn.Module):
    """Sum over scales of weighted L1/L2 distances between mel spectrograms of `estimate` and `reference`."""

    def __init__(self, sample_rate: int, config: MelLossConfig):
        super().__init__()
        if len(config.window_lengths) != len(config.n_mels):
            raise ValueError(
                f"n_mels must have one entry per window length, got {len(config.n_mels)} n_mels for "
                f"{len(config.window_lengths)} window_lengths"
            )
        if min(config.window_lengths) < 4:
            raise ValueError(f"window_lengths must be >= 4 (hop = window / 4), got {config.window_lengths}")
        self.config = config
        self.spectrograms = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate,
                n_fft=window,
                win_length=window,
                hop_length=window // 4,
                n_mels=n_mels,
                power=1.0,
                center=True,
            )
            for window, n_mels in zip(config.window_lengths, config.n_mels)
        )

    def forward(self, estimate: Tensor, reference: Tensor) -> Tensor:
        """estimate, reference: [B, C, T] -> scalar loss."""
        if estimate.shape != reference.shape:
            raise ValueError(
                f"estimate and reference must have the same shape, got {estimate.shape} and {reference.shape}"
            )
        config = self.config
        loss = estimate.new_zeros(())
        for spectrogram in self.spectrograms:
            mel_estimate = spectrogram(estimate).clamp(min=config.floor)  # [B, C, n_mels, frames]
            mel_reference = spectrogram(reference).clamp(min=config.floor)
            if config.linear_l1_weight:
                loss = loss + config.linear_l1_weight * F.l1_loss(mel_estimate, mel_reference)
            if config.log_l1_weight or config.log_l2_weight:
                log_estimate, log_reference = mel_estimate.log10(), mel_reference.log10()
                loss = loss + config.log_l1_weight * F.l1_loss(log_estimate, log_reference)
                loss = loss + config.log_l2_weight * F.mse_loss(log_estimate, log_reference)
        return loss


def discriminator_adversarial_loss(real_logits: list[Tensor], fake_logits: list[Tensor], kind: str) -> Tensor:
    """Discriminator loss, averaged over sub-discriminators; the discriminator wants real -> 1, fake -> -1 (hinge)
    or real -> 1, fake -> 0 (least squares)."""
    _check_kind(kind)
    losses = []
    for real, fake in zip(real_logits, fake_logits, strict=True):
        if kind == "hinge":
            losses.append(F.relu(1 - real).mean() + F.relu(1 + fake).mean())
        else:
            losses.append(((real - 1) ** 2).mean() + (fake**2).mean())
    return torch.stack(losses).mean()


def generator_adversarial_loss(fake_logits: list[Tensor], kind: str) -> Tensor:
    """Generator loss on the discriminator's logits for generated audio, averaged over sub-discriminators."""
    _check_kind(kind)
    if kind == "hinge":
        losses = [F.relu(1 - fake).mean() for fake in fake_logits]
    else:
        losses = [((fake - 1) ** 2).mean() for fake in fake_logits]
    return torch.stack(losses).mean()


def feature_matching_loss(real_features: list[list[Tensor]], fake_features: list[list[Tensor]]) -> Tensor:
    """Mean L1 distance between hidden activations on real and generated audio, over all layers of all
    sub-discriminators. Real activations are targets and receive no gradient."""
    losses = [
        F.l1_loss(fake, real.detach())
        for real_layers, fake_layers in zip(real_features, fake_features, strict=True)
        for real, fake in zip(real_layers, fake_layers, strict=True)
    ]
    return torch.stack(losses).mean()


def _check_kind(kind: str) -> None:
    if kind not in ADVERSARIAL_LOSSES:
        raise ValueError(f"adversarial loss kind must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")
