"""Multi-scale residual vector quantization (SNAC, Siuzdak et al. 2024): each codebook ticks at its own rate.

Codebook k quantizes the residual averaged over windows of `strides[k]` latent frames, and its code vectors are
repeated back to the latent rate before they are subtracted, so coarse codebooks (large strides) carry slow
structure and fine ones (stride 1) detail. Codes therefore have one length per codebook:

    residual_1 = latents                                                       [B, D, T]
    code_k     = nearest(avg_pool(residual_k, strides[k]))                     [B, T / strides[k]]
    residual_{k+1} = residual_k - repeat(vector(code_k), strides[k])           [B, D, T]

With strides [4, 2, 1] a latent of T frames gives codes of T/4, T/2 and T. T must be a multiple of every
stride. Each level is DAC's factorized lookup (codec/vq.py FactorizedCodebook: project to `codebook_dim`,
cosine nearest neighbour, project back), applied at the pooled rate.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.vq import DEAD_CODE_MODES, FactorizedCodebook, codebook_stats


@dataclass
class MultiScaleQuantizerConfig:
    """Defaults are SNAC 24 kHz; the knobs are documented in configs/codec/snac_24khz.yaml."""

    strides: tuple[int, ...] = (4, 2, 1)  # one codebook per stride, coarse first
    codebook_size: int = 4096
    codebook_dim: int = 8
    ema_decay: float = 0.99  # of the usage statistics only (the codebooks learn by gradient)
    dead_code_threshold: float = 0.0  # 0: never restart (SNAC)
    dead_code_mode: str = "uniform_fraction"  # codec.vq.DeadCodeMode

    def __post_init__(self) -> None:
        self.strides = tuple(int(stride) for stride in self.strides)
        if not self.strides or any(stride < 1 for stride in self.strides):
            raise ValueError(f"strides must be a non-empty list of integers >= 1, got {self.strides}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1, got {self.codebook_dim}")
        if self.dead_code_mode not in DEAD_CODE_MODES:
            raise ValueError(f"dead_code_mode must be one of {DEAD_CODE_MODES}, got {self.dead_code_mode!r}")

    @property
    def frames_multiple(self) -> int:
        """Latent lengths must be a multiple of this: every stride divides it."""
        return math.lcm(*self.strides)


class MultiScaleQuantizerOutput(NamedTuple):
    quantized: Tensor  # [B, D, T] sum of the K levels' code vectors at the latent rate, straight-through
    codes: list[Tensor]  # K tensors [B, T / strides[k]] long
    commit_loss: Tensor  # scalar: per level, mean over items; summed over levels
    codebook_loss: Tensor  # scalar, same reduction


class MultiScaleResidualVectorQuantizer(nn.Module):
    def __init__(self, dim: int, config: MultiScaleQuantizerConfig) -> None:
        super().__init__()
        self.config = config
        self.codebooks = nn.ModuleList(
            [
                FactorizedCodebook(
                    dim, config.codebook_dim, config.codebook_size, ema_decay=config.ema_decay,
                    dead_code_threshold=config.dead_code_threshold, dead_code_mode=config.dead_code_mode,
                )
                for _ in config.strides
            ]
        )

    @property
    def strides(self) -> tuple[int, ...]:
        return self.config.strides

    @property
    def num_codebooks(self) -> int:
        return len(self.config.strides)

    def _check_latents(self, latents: Tensor) -> None:
        if latents.dim() != 3:
            raise ValueError(f"latents must be [B, D, T], got shape {tuple(latents.shape)}")
        T = latents.shape[-1]
        if T == 0 or T % self.config.frames_multiple:
            raise ValueError(f"latents have {T} frames: a positive multiple of {self.config.frames_multiple} is needed "
                             f"(every stride of {list(self.strides)} must divide it)")

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, latents: Tensor) -> MultiScaleQuantizerOutput:
        """latents [B, D, T] -> MultiScaleQuantizerOutput, in float32 even under mixed precision."""
        self._check_latents(latents)
        latents = latents.float()
        residual = latents
        quantized = torch.zeros_like(latents)
        codes, commit_loss, codebook_loss = [], latents.new_zeros(()), latents.new_zeros(())
        for stride, codebook in zip(self.strides, self.codebooks):
            level = codebook(F.avg_pool1d(residual, stride, stride))  # at T / stride frames
            level_quantized = level.quantized.repeat_interleave(stride, dim=-1)  # [B, D, T]
            residual = residual - level_quantized
            quantized = quantized + level_quantized
            commit_loss = commit_loss + level.commit_loss.mean()
            codebook_loss = codebook_loss + level.codebook_loss.mean()
            codes.append(level.codes)
        return MultiScaleQuantizerOutput(quantized, codes, commit_loss, codebook_loss)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, latents: Tensor) -> list[Tensor]:
        """latents [B, D, T] -> K codes [B, T / strides[k]] (long), in float32 like `forward`"""
        self._check_latents(latents)
        residual = latents.float()
        codes = []
        for stride, codebook in zip(self.strides, self.codebooks):
            level_codes = codebook.encode(F.avg_pool1d(residual, stride, stride))  # [B, T / stride]
            residual = residual - codebook.decode(level_codes).repeat_interleave(stride, dim=-1)
            codes.append(level_codes)
        return codes

    def decode(self, codes: list[Tensor]) -> Tensor:
        """K codes [B, T / strides[k]] -> [B, D, T]"""
        self.check_codes(codes)
        quantized = None
        for stride, codebook, level_codes in zip(self.strides, self.codebooks, codes):
            level_quantized = codebook.decode(level_codes.long()).repeat_interleave(stride, dim=-1)
            quantized = level_quantized if quantized is None else quantized + level_quantized
        return quantized

    def check_codes(self, codes: list[Tensor]) -> int:
        """Refuses codes that do not fit the strides and cardinality; returns the latent length T."""
        if not isinstance(codes, (list, tuple)) or len(codes) != self.num_codebooks:
            found = len(codes) if isinstance(codes, (list, tuple)) else type(codes).__name__
            raise ValueError(f"codes must be a list of {self.num_codebooks} tensors (one per stride "
                             f"{list(self.strides)}), got {found}")
        for k, level_codes in enumerate(codes):
            if level_codes.dim() != 2:
                raise ValueError(f"codes[{k}] must be [B, T / {self.strides[k]}], got shape {tuple(level_codes.shape)}")
            if level_codes.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"codes[{k}] must be an integer tensor, got {level_codes.dtype}")
            if level_codes.numel() and (level_codes.min() < 0 or level_codes.max() >= self.config.codebook_size):
                raise ValueError(f"codes[{k}] must be in [0, {self.config.codebook_size}), got "
                                 f"[{int(level_codes.min())}, {int(level_codes.max())}]")
        num_frames = codes[0].shape[-1] * self.strides[0]
        expected = [(codes[0].shape[0], num_frames // stride) for stride in self.strides]
        found = [tuple(level_codes.shape) for level_codes in codes]
        if found != expected or num_frames == 0 or num_frames % self.config.frames_multiple:
            raise ValueError(f"codes have shapes {found}; strides {list(self.strides)} need {expected} "
                             f"(batch, T / stride for one latent length T)")
        return num_frames

    def stats(self) -> dict[str, float]:
        """Per codebook: usage entropy in bits (log2(card) = uniform) and number of dead codes."""
        return codebook_stats(self.codebooks)
