"""SNAC, a multi-scale codec (Siuzdak et al. 2024): encoder -> multi-scale RVQ -> decoder.

    wav [B, C, T] --pad--> [B, C, N * hop] --encoder--> latents [B, D, N] --quantizer--> codes, one per stride
    codes [B, N / strides[k]] --decode--> wav [B, C, N * hop]

The input is padded with zeros at the end to a whole number of `samples_multiple` samples, so that the latent
length N is a multiple of every quantizer stride and of the attention window. With SNAC 24 kHz (hop 512,
strides 4, 2, 1) codes tick at 11.7, 23.4 and 46.9 Hz: 12 bits each, 0.98 kbps.

Unlike `Codec` (codec/codec.py), codes are a list of tensors of different lengths, there is no bitrate choice
(every codebook is needed) and nothing streams. A codec is stored as a directory (`save` / `SNACCodec.load`):
`config.json` + `model.safetensors`.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from codec.files import load_codec_files, save_codec_files
from codec.multiscale_rvq import MultiScaleQuantizerConfig, MultiScaleResidualVectorQuantizer
from codec.snac_generator import SNACDecoder, SNACEncoder



@dataclass
class SNACConfig:
    """Maps one-to-one onto configs/codec/snac_*.yaml: `SNACConfig(**cfg.codec)`. Defaults: SNAC 24 kHz."""

    sample_rate: int = 24_000
    channels: int = 1
    encoder_dim: int = 48  # width of the first conv; doubles at every down-sampling, to the latent width
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    decoder_dim: int = 1024  # width of the decoder's first layers; halves at every up-sampling
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    attention_window: int | None = None  # local attention window in latent frames; None = no attention
    attention_head_dim: int = 64
    noise: bool = True
    depthwise: bool = True
    quantizer: MultiScaleQuantizerConfig = field(default_factory=MultiScaleQuantizerConfig)

    def __post_init__(self) -> None:
        if isinstance(self.quantizer, Mapping):  # Hydra and config.json give a plain mapping
            self.quantizer = MultiScaleQuantizerConfig(**self.quantizer)
        self.encoder_rates = tuple(int(rate) for rate in self.encoder_rates)
        self.decoder_rates = tuple(int(rate) for rate in self.decoder_rates)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")
        for name in ("encoder_dim", "decoder_dim", "attention_head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("encoder_rates", "decoder_rates"):
            rates = getattr(self, name)
            if not rates or any(rate < 1 for rate in rates):
                raise ValueError(f"{name} must be a non-empty list of integers >= 1, got {list(rates)}")
        if math.prod(self.decoder_rates) != math.prod(self.encoder_rates):
            raise ValueError(f"decoder_rates {list(self.decoder_rates)} must up-sample by the encoder's hop "
                             f"{math.prod(self.encoder_rates)} (encoder_rates {list(self.encoder_rates)})")
        if self.attention_window is not None and self.attention_window < 1:
            raise ValueError(f"attention_window must be >= 1 or None, got {self.attention_window}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def latent_dim(self) -> int:
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def samples_multiple(self) -> int:
        """Inputs are padded to a multiple of this: whole latent frames for every stride and attention window."""
        return self.hop_length * math.lcm(self.quantizer.frames_multiple, self.attention_window or 1)


class SNACOutput(NamedTuple):
    wav: Tensor  # [B, C, T] reconstruction, trimmed to the input length
    codes: list[Tensor]  # K tensors [B, N / strides[k]] long
    latents: Tensor  # [B, D, N] encoder output before quantization
    quantized: Tensor  # [B, D, N] decoder input
    commit_loss: Tensor  # scalar, summed over codebooks
    codebook_loss: Tensor  # scalar, summed over codebooks


class SNACCodec(nn.Module):
    def __init__(self, config: SNACConfig) -> None:
        super().__init__()
        self.config = config
        attention = dict(attention_window=config.attention_window, attention_head_dim=config.attention_head_dim)
        self.encoder = SNACEncoder(config.channels, config.encoder_dim, config.encoder_rates, config.depthwise,
                                   **attention)
        self.quantizer = MultiScaleResidualVectorQuantizer(config.latent_dim, config.quantizer)
        self.decoder = SNACDecoder(config.channels, config.latent_dim, config.decoder_dim, config.decoder_rates,
                                   config.noise, config.depthwise, **attention)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def frame_rate(self) -> float:
        """Latent frames per second; codebook k ticks at frame_rate / strides[k]."""
        return self.sample_rate / self.hop_length

    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.quantizer.strides

    @property
    def num_codebooks(self) -> int:
        return len(self.strides)

    @property
    def cardinality(self) -> int:
        return self.config.quantizer.codebook_size

    @property
    def kbps(self) -> float:
        return sum(self.frame_rate / stride for stride in self.strides) * math.log2(self.cardinality) / 1000

    def _check_wav(self, wav: Tensor) -> None:
        if wav.dim() != 3:
            raise ValueError(f"wav must be [B, C, T], got shape {tuple(wav.shape)}")
        B, C, T = wav.shape
        if C != self.channels:
            raise ValueError(f"wav has {C} channels, this codec expects {self.channels}")
        if T == 0:
            raise ValueError("wav has no samples")
        if not torch.isfinite(wav).all():
            raise ValueError("wav contains NaN or inf values")

    def pad(self, wav: Tensor) -> Tensor:
        """[B, C, T] -> [B, C, ceil(T / samples_multiple) * samples_multiple], zeros appended (SNAC's preprocess)."""
        return F.pad(wav, (0, -wav.shape[-1] % self.config.samples_multiple))

    def forward(self, wav: Tensor) -> SNACOutput:
        """Training pass (usage statistics update when `training`). wav [B, C, T] -> SNACOutput"""
        self._check_wav(wav)
        latents = self.encoder(self.pad(wav))  # [B, D, N]
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized)[..., : wav.shape[-1]]  # [B, C, T]
        return SNACOutput(reconstruction, quantized.codes, latents, quantized.quantized, quantized.commit_loss,
                          quantized.codebook_loss)

    def encode(self, wav: Tensor) -> list[Tensor]:
        """wav [B, C, T] -> K codes [B, N / strides[k]] (long), N = ceil(T / samples_multiple) * samples_multiple / hop"""
        self._check_wav(wav)
        with parametrize.cached():  # weight norm computed once per call, not once per use
            return self.quantizer.encode(self.encoder(self.pad(wav)))

    def decode(self, codes: list[Tensor]) -> Tensor:
        """K codes [B, N / strides[k]] -> wav [B, C, N * hop_length]; the noise blocks draw from torch's generator."""
        with parametrize.cached():
            return self.decoder(self.quantizer.decode(codes))

    def quantizer_stats(self) -> dict[str, float]:
        """For logging: per-codebook usage entropy in bits and dead-code count."""
        return self.quantizer.stats()

    def save(self, directory: str | Path) -> None:
        save_codec_files(self, self.config, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "SNACCodec":
        """Rebuilds a saved codec in eval mode."""
        return load_codec_files(cls, SNACConfig, directory, device)
