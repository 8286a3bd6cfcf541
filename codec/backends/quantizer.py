"""Residual VQ for inference with EMA codebooks: codebooks stacked once, their squared norms precomputed.

The reference `ResidualVectorQuantizer.encode` recomputes every codebook's squared norms (a pass over K x card x D
floats) on every call, which dominates a one-frame streaming chunk, and `decode` sums K looked-up vectors with K
adds. Here `encode` runs the same nearest-code search (the same addmm on the same rows, so the same codes) with
the norms read from a buffer, and `decode` sums the K code vectors of each frame in one `embedding_bag`.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from codec.rvq import ResidualVectorQuantizer
from codec.vq import EMACodebook


class PrecomputedNormQuantizer(nn.Module):
    """The inference half of a ResidualVectorQuantizer of `EMACodebook`s: `encode` and `decode`, same signatures."""

    def __init__(self, reference: ResidualVectorQuantizer) -> None:
        super().__init__()
        if not all(isinstance(codebook, EMACodebook) for codebook in reference.codebooks):
            raise ValueError("PrecomputedNormQuantizer needs EMA codebooks (quantizer.lookup 'ema')")
        codebooks = torch.stack([codebook.codebook.detach() for codebook in reference.codebooks])  # [K, card, D]
        self.register_buffer("codebooks", codebooks, persistent=False)
        self.register_buffer("squared_norms", codebooks.pow(2).sum(-1), persistent=False)  # [K, card]
        self.num_codebooks, self.codebook_size, _ = codebooks.shape

    def _check_num_codebooks(self, num_codebooks: int) -> None:
        if not 1 <= num_codebooks <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be in [1, {self.num_codebooks}], got {num_codebooks}")

    @torch.autocast("cuda", enabled=False)
    @torch.autocast("cpu", enabled=False)
    def encode(self, latents: Tensor, num_codebooks: int | None = None) -> Tensor:
        """latents [B, D, F] -> codes [B, K, F] (long), in float32"""
        B, D, num_frames = latents.shape
        num_codebooks = self.num_codebooks if num_codebooks is None else num_codebooks
        self._check_num_codebooks(num_codebooks)
        residual = rearrange(latents.float(), "b d f -> (b f) d")  # [B * F, D]
        codes = []
        levels = zip(self.codebooks.unbind(0), self.codebooks.transpose(1, 2).unbind(0), self.squared_norms.unbind(0))
        for codebook, transposed, squared_norms in list(levels)[:num_codebooks]:
            # |x - c|^2 - |x|^2 = |c|^2 - 2 x.c, as codec.vq.nearest_euclidean computes it (same rows, same codes)
            level_codes = torch.addmm(squared_norms, residual, transposed, alpha=-2.0).argmin(dim=-1)  # [B * F]
            residual = residual - F.embedding(level_codes, codebook)
            codes.append(level_codes)
        return rearrange(torch.stack(codes, dim=-1), "(b f) k -> b k f", b=B)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K', F] with K' <= K (the first K' codebooks) -> [B, D, F] (a view of [B, F, D])"""
        B, K, num_frames = codes.shape
        self._check_num_codebooks(K)
        offsets = torch.arange(K, device=codes.device) * self.codebook_size  # codebook k's rows in the stack
        rows = rearrange(codes + offsets[:, None], "b k f -> (b f) k")  # [B * F, K]
        table = self.codebooks[:K].reshape(K * self.codebook_size, -1)  # [K * card, D]
        quantized = F.embedding_bag(rows, table, mode="sum")  # [B * F, D]
        return rearrange(quantized, "(b f) d -> b d f", b=B)
