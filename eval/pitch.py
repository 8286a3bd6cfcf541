"""Does decoded audio keep the notes? Chroma similarity and key agreement between a reference and its decoding.

Loudness and timbre metrics (mel distance, STFT distance) barely move when a codec gets the pitches wrong: a
decoder can reproduce the instrument's spectral envelope with the wrong notes under it. These two compare what
a listener hears as harmony:
- chroma cosine: both signals' STFT magnitudes are folded onto 12 pitch classes per frame (the nearest-semitone
  filterbank of conditioners.chroma between min_frequency and max_frequency), and the cosine similarity of the two
  12-vectors is averaged over the frames where the reference sounds (energy above `silence_db` below its
  loudest frame). 1 = the same pitch classes in every frame; unrelated music scores about 0.5-0.6, because every
  chroma vector is non-negative.
- key agreement: eval.key_tempo's key estimator (Krumhansl-Kessler templates) names the same key for both.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from conditioners.chroma import chroma_filterbank
from eval.key_tempo import KeyConfig, estimate_key


@dataclass
class ChromaConfig:
    """Frame-wise chroma of eval.pitch.chroma_cosine; defaults resolve semitones down to ~100 Hz at 24 kHz."""
    n_fft: int = 4096            # 5.9 Hz bins at 24 kHz
    hop_length: int = 1024       # 43 ms frames at 24 kHz
    min_frequency: float = 55.0  # Hz (A1), lowest bin folded onto pitch classes
    max_frequency: float = 2000.0  # Hz, above it overtones dominate the fundamentals
    silence_db: float = 60.0     # frames this far below the reference's loudest frame are not scored


KEY_CONFIG = KeyConfig(n_fft=4096, hop_length=2048, min_frequency=60.0, max_frequency=1000.0)  # configs/adherence.yaml


def _mono(wav: Tensor) -> Tensor:
    """[..., C, T] or [T] -> [..., T] (channels averaged)."""
    return wav if wav.dim() == 1 else wav.mean(dim=-2)


def chroma_frames(wav: Tensor, sample_rate: int, config: ChromaConfig) -> Tensor:
    """wav [..., T] -> [..., frames, 12] pitch-class magnitude per STFT frame."""
    filterbank = chroma_filterbank(sample_rate, config.n_fft, config.min_frequency, config.max_frequency).to(wav)
    window = torch.hann_window(config.n_fft, device=wav.device, dtype=wav.dtype)
    leading = wav.shape[:-1]
    spectrum = torch.stft(wav.reshape(-1, wav.shape[-1]), config.n_fft, config.hop_length, window=window,
                          return_complex=True).abs()  # [N, bins, frames]
    return (spectrum.transpose(1, 2) @ filterbank).reshape(*leading, -1, filterbank.shape[1])


def chroma_cosine(estimate: Tensor, reference: Tensor, sample_rate: int, config: ChromaConfig = ChromaConfig()
                  ) -> Tensor:
    """estimate, reference [..., C, T] (or [T]) -> [...] mean cosine of their chroma over the reference's
    sounding frames (NaN where the reference is silent throughout)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ in shape")
    estimated, referenced = (chroma_frames(_mono(wav), sample_rate, config) for wav in (estimate, reference))
    cosine = torch.nn.functional.cosine_similarity(estimated, referenced, dim=-1, eps=1e-12)  # [..., frames]
    energy = referenced.pow(2).sum(dim=-1)  # [..., frames]
    threshold = energy.amax(dim=-1, keepdim=True) * 10 ** (-config.silence_db / 10)
    sounding = (energy > threshold) & (energy > 0)
    return (cosine * sounding).sum(dim=-1) / sounding.sum(dim=-1)


def key_agreement(estimate: Tensor, reference: Tensor, sample_rate: int, config: KeyConfig = KEY_CONFIG) -> float:
    """estimate, reference [C, T] (or [T]) -> 1.0 when the key estimator names the same key for both, else 0.0."""
    return float(estimate_key(_mono(estimate), sample_rate, config) == estimate_key(_mono(reference), sample_rate,
                                                                                     config))
