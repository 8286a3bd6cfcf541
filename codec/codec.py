"""The codec: SEANet encoder -> residual VQ -> SEANet or iSTFT decoder (EnCodec / DAC family; Vocos).

    wav [B, C, T] --encoder--> latents [B, D, F] --RVQ--> codes [B, K, F] --decode--> wav [B, C, F * hop]

F = ceil(T / hop_length) frames at `frame_rate` = sample_rate / hop_length Hz; each code carries
log2(cardinality) bits, so K codebooks cost K * frame_rate * log2(cardinality) / 1000 kbps.

A trained codec is stored as a directory (`save` / `Codec.load`): `config.json` + `model.safetensors`.
A causal codec streams: under `with codec.streaming(batch_size):`, `encode` and `decode` take consecutive
chunks (a whole number of frames each) and return exactly what the offline call returns for those frames.
"""

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from codec.istft_decoder import DecoderConfig, ISTFTDecoder
from codec.rvq import QuantizerConfig, ResidualVectorQuantizer
from codec.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder
from codec.files import load_codec_files, save_codec_files
from codec.streaming import StreamingModule



@dataclass
class CodecConfig:
    """Maps one-to-one onto configs/codec/*.yaml: `CodecConfig(**cfg.codec.model)`. Defaults: EnCodec 24 kHz."""

    sample_rate: int = 24_000
    channels: int = 1
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)  # seanet or istft; older config.json: none, seanet
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    bandwidths: tuple[float, ...] = ()  # kbps the model is meant to be used at; each must be a whole codebook count

    def __post_init__(self) -> None:
        # Hydra and config.json give plain mappings for the nested parts.
        if isinstance(self.seanet, Mapping):
            self.seanet = SEANetConfig(**self.seanet)
        if isinstance(self.decoder, Mapping):
            self.decoder = DecoderConfig(**self.decoder)
        if isinstance(self.quantizer, Mapping):
            self.quantizer = QuantizerConfig(**self.quantizer)
        self.bandwidths = tuple(float(kbps) for kbps in self.bandwidths)
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")


class CodecOutput(NamedTuple):
    wav: Tensor  # [B, C, T] reconstruction, trimmed to the input length
    codes: Tensor  # [B, K, F] long
    latents: Tensor  # [B, D, F] encoder output before quantization
    quantized: Tensor  # [B, D, F] decoder input
    commit_loss: Tensor  # scalar, summed over codebooks (see ResidualVectorQuantizer)
    codebook_loss: Tensor  # scalar, 0 for EMA codebooks


class Codec(StreamingModule[None]):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config.channels, config.seanet)
        self.quantizer = ResidualVectorQuantizer(config.seanet.dimension, config.quantizer)
        if config.decoder.kind == "istft":
            self.decoder = ISTFTDecoder(config.channels, config.seanet.dimension, self.hop_length, config.decoder)
        else:
            self.decoder = SEANetDecoder(config.channels, config.seanet)
        for kbps in config.bandwidths:
            self.bandwidth_to_num_codebooks(kbps)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.channels

    @property
    def hop_length(self) -> int:
        return self.config.seanet.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_codebooks(self) -> int:
        return self.config.quantizer.num_codebooks

    @property
    def cardinality(self) -> int:
        return self.config.quantizer.codebook_size

    def bandwidth_to_num_codebooks(self, kbps: float) -> int:
        """Largest number of codebooks whose bitrate K * frame_rate * log2(card) / 1000 fits in `kbps`."""
        kbps_per_codebook = self.frame_rate * math.log2(self.cardinality) / 1000
        num_codebooks = math.floor(kbps / kbps_per_codebook + 1e-9)
        if not 1 <= num_codebooks <= self.num_codebooks:
            raise ValueError(
                f"bandwidth must be in [{kbps_per_codebook:g}, {kbps_per_codebook * self.num_codebooks:g}] kbps "
                f"(1 to {self.num_codebooks} codebooks of {kbps_per_codebook:g} kbps), got {kbps}"
            )
        return num_codebooks

    @contextmanager
    def streaming(self, batch_size: int) -> Iterator[None]:
        """Streaming session (inference): weight norm is computed once for the session, not once per chunk."""
        with super().streaming(batch_size), parametrize.cached():
            yield

    def _check_wav(self, wav: Tensor) -> None:
        if wav.dim() != 3:
            raise ValueError(f"wav must be [B, C, T], got shape {tuple(wav.shape)}")
        B, C, T = wav.shape
        if C != self.channels:
            raise ValueError(f"wav has {C} channels, this codec expects {self.channels}")
        if T < self.hop_length:
            raise ValueError(f"wav has {T} samples, shorter than one frame ({self.hop_length} samples)")
        if self.is_streaming and T % self.hop_length:
            raise ValueError(f"streaming chunks must be a whole number of frames of {self.hop_length} samples, got {T}")
        if not torch.isfinite(wav).all():
            raise ValueError("wav contains NaN or inf values")

    def forward(self, wav: Tensor) -> CodecOutput:
        """Training pass (quantizer dropout, EMA updates when `training`). wav [B, C, T] -> CodecOutput"""
        self._check_wav(wav)
        latents = self.encoder(wav)  # [B, D, F]
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized)[..., : wav.shape[-1]]  # [B, C, T]
        return CodecOutput(
            wav=reconstruction,
            codes=quantized.codes,
            latents=latents,
            quantized=quantized.quantized,
            commit_loss=quantized.commit_loss,
            codebook_loss=quantized.codebook_loss,
        )

    def encode(self, wav: Tensor, num_codebooks: int | None = None) -> Tensor:
        """wav [B, C, T] -> codes [B, K, ceil(T / hop_length)] (long); K defaults to all codebooks."""
        self._check_wav(wav)
        with parametrize.cached():  # weight norm computed once per call, not once per use
            return self.quantizer.encode(self.encoder(wav), num_codebooks)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K', F] (the first K' <= K codebooks) -> wav [B, C, F * hop_length]"""
        if codes.dim() != 3:
            raise ValueError(f"codes must be [B, K, F], got shape {tuple(codes.shape)}")
        if codes.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"codes must be an integer tensor, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cardinality):
            raise ValueError(f"codes must be in [0, {self.cardinality}), got [{int(codes.min())}, {int(codes.max())}]")
        with parametrize.cached():
            return self.decoder(self.quantizer.decode(codes.long()))

    def quantizer_stats(self) -> dict[str, float]:
        """For logging: per-codebook usage entropy in bits and dead-code count."""
        return self.quantizer.stats()

    def save(self, directory: str | Path) -> None:
        save_codec_files(self, self.config, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "Codec":
        """Rebuilds a saved codec in eval mode."""
        return load_codec_files(cls, CodecConfig, directory, device)
