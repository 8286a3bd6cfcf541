"""Residual vector quantization (Zeghidour et al. 2021, SoundStream Alg. 1) with DAC's per-item dropout.

Codebook k quantizes what codebooks 1..k-1 left over; the quantized latent is the sum of the K code vectors.

    residual_1 = latents
    code_k     = nearest(residual_k)         residual_{k+1} = residual_k - vector(code_k)

Quantizer dropout (DAC): in training a fraction `dropout` of the batch items keep only a random number of
codebooks n ~ U{1..K} (the others keep all K), so one decoder learns every bitrate. The residual chain runs
over all K codebooks for every item (each codebook still learns on true residuals); only an item's sum and
its losses stop at its depth.
"""

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from codec.vq import DEAD_CODE_MODES, EMACodebook, FactorizedCodebook, codebook_stats

Lookup = Literal["ema", "factorized"]
LOOKUPS = ("ema", "factorized")


@dataclass
class QuantizerConfig:
    """Defaults are EnCodec 24 kHz; the knobs are documented in configs/codec/base.yaml."""

    num_codebooks: int = 32
    codebook_size: int = 1024
    lookup: str = "ema"  # Lookup: hydra structured configs take no Literal
    codebook_dim: int = 8
    ema_decay: float = 0.99
    kmeans_iters: int = 50
    dead_code_threshold: float = 2.0
    dead_code_mode: str = "count"  # codec.vq.DeadCodeMode
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {self.num_codebooks}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {self.codebook_size}")
        if self.lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {LOOKUPS}, got {self.lookup!r}")
        if self.dead_code_mode not in DEAD_CODE_MODES:
            raise ValueError(f"dead_code_mode must be one of {DEAD_CODE_MODES}, got {self.dead_code_mode!r}")
        if not 0.0 <= self.dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {self.dropout}")


class QuantizerOutput(NamedTuple):
    quantized: Tensor  # [B, D, T] sum of each item's code vectors (straight-through for the EMA lookup)
    codes: Tensor  # [B, K, T] long, all K codebooks (items past their dropout depth included)
    commit_loss: Tensor  # scalar: per codebook, mean over items (0 past an item's depth); summed over codebooks
    codebook_loss: Tensor  # scalar, same reduction; 0 for EMA codebooks
    depth: Tensor  # [B] long, number of codebooks summed into each item's `quantized`


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, dim: int, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        self.codebooks = nn.ModuleList(
            [
                EMACodebook(
                    dim, config.codebook_size, ema_decay=config.ema_decay, kmeans_iters=config.kmeans_iters,
                    dead_code_threshold=config.dead_code_threshold, dead_code_mode=config.dead_code_mode,
                )
                if config.lookup == "ema"
                else FactorizedCodebook(
                    dim, config.codebook_dim, config.codebook_size, ema_decay=config.ema_decay,
                    dead_code_threshold=config.dead_code_threshold, dead_code_mode=config.dead_code_mode,
                )
                for _ in range(config.num_codebooks)
            ]
        )

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    def _check_num_codebooks(self, num_codebooks: int | None) -> int:
        if num_codebooks is None:
            return self.num_codebooks
        if not 1 <= num_codebooks <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.num_codebooks}], got {num_codebooks}")
        return num_codebooks

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def forward(self, latents: Tensor, num_codebooks: int | None = None) -> QuantizerOutput:
        """latents [B, D, T] -> QuantizerOutput; quantizer dropout applies in training only.

        Runs in float32 even under mixed precision: nearest-neighbour search and EMA statistics need it.
        """
        latents = latents.float()
        B, D, T = latents.shape
        K = self._check_num_codebooks(num_codebooks)
        depth = torch.full((B,), K, device=latents.device)
        if self.training and self.config.dropout > 0:
            dropped = torch.rand(B, device=latents.device) < self.config.dropout
            depth = torch.where(dropped, torch.randint(1, K + 1, (B,), device=latents.device), depth)
        residual = latents
        quantized = torch.zeros_like(latents)
        codes, commit_loss, codebook_loss = [], latents.new_zeros(()), latents.new_zeros(())
        for k, codebook in enumerate(self.codebooks[:K]):
            level = codebook(residual)
            residual = residual - level.quantized
            active = (depth > k).to(latents.dtype)  # [B]
            quantized = quantized + level.quantized * active[:, None, None]
            commit_loss = commit_loss + (level.commit_loss * active).mean()
            codebook_loss = codebook_loss + (level.codebook_loss * active).mean()
            codes.append(level.codes)
        return QuantizerOutput(quantized, torch.stack(codes, dim=1), commit_loss, codebook_loss, depth)

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, latents: Tensor, num_codebooks: int | None = None) -> Tensor:
        """latents [B, D, T] -> codes [B, K, T] (long), in float32 like `forward`"""
        residual = latents.float()
        codes = []
        for codebook in self.codebooks[: self._check_num_codebooks(num_codebooks)]:
            level_codes = codebook.encode(residual)  # [B, T]
            residual = residual - codebook.decode(level_codes)
            codes.append(level_codes)
        return torch.stack(codes, dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K', T] with K' <= K (the first K' codebooks) -> [B, D, T]"""
        B, K, T = codes.shape
        self._check_num_codebooks(K)
        quantized = self.codebooks[0].decode(codes[:, 0])
        for k in range(1, K):
            quantized = quantized + self.codebooks[k].decode(codes[:, k])
        return quantized

    def stats(self) -> dict[str, float]:
        """Per codebook: usage entropy in bits (log2(card) = uniform) and number of dead codes."""
        return codebook_stats(self.codebooks)
