"""Causal self-attention (fused qkv, optional rotary positions, KV cache) and cross-attention to a condition memory
with a key-padding mask, both with `scaled_dot_product_attention`; projections have no bias, as MusicGen's.
With a cache, self-attention writes the new keys and values to it and the cache attends (lm/kv_cache.py).
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lm.kv_cache import KVCache


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (RoFormer, Su et al. 2021), halves convention. x [B, H, N, D / H]; cos, sin [N, D / H]."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class SelfAttention(nn.Module):
    """Causal multi-head self-attention; with a `KVCache`, the new steps attend to the cached prefix."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads={num_heads}, got {dim}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def make_cache(self, batch_size: int, capacity: int, dtype: torch.dtype, device: torch.device) -> KVCache:
        """The cache this layer decodes with, [B, H, capacity, D / H]."""
        return KVCache.allocate(batch_size, self.num_heads, self.head_dim, capacity, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, past: int = 0,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]. past: positions already in the cache, before the N new ones.
        rotary: (cos, sin) [N, D / H] for the N new positions."""
        B, N, D = x.shape
        # [B, N, 3 D] -> three [B, H, N, D / H]; view + permute rather than einops: this runs every decode step.
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        if cache is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            cache.write(k, v, start=past)
            out = cache.attend(q, past)
        return self.out(out.transpose(1, 2).reshape(B, N, D))


@dataclass
class CrossMemory:
    """A condition memory projected once for one layer.

    keys, values: [B, H, L, D / H]
    mask:         [B, 1, 1, L] bool, True where a key may be attended
    all_visible:  every key may be attended by every row, so attention runs without the mask, which is faster
                  (docs/decode_speed.md)
    """

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    all_visible: bool


class CrossAttention(nn.Module):
    """Multi-head attention from the sequence to a condition memory, honouring the memory's padding mask."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads={num_heads}, got {dim}")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key_value = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def project(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> CrossMemory:
        """memory [B, L, D], memory_mask [B, L] (True = real) -> keys and values, computed once per generation."""
        B, L, D = memory.shape
        keys, values = self.key_value(memory).view(B, L, 2, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        # A row with no real key (the CFG null condition) softmaxes over nothing: NaN or zeros depending on the SDPA
        # backend. Make it backend-independent: such a row attends to every position of zeroed values, so its
        # output is exactly zero, as if there were no cross-attention.
        has_key = memory_mask.any(dim=1)  # [B]
        values = values * has_key[:, None, None, None].to(values.dtype)
        mask = (memory_mask | ~has_key[:, None])[:, None, None, :]  # [B, 1, 1, L]
        return CrossMemory(keys=keys, values=values, mask=mask, all_visible=bool(mask.all()))

    def forward(self, x: torch.Tensor, memory: CrossMemory) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]."""
        B, N, D = x.shape
        q = self.query(x).view(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)  # [B, H, N, D / H]
        out = F.scaled_dot_product_attention(q, memory.keys, memory.values,
                                             attn_mask=None if memory.all_visible else memory.mask)
        return self.out(out.transpose(1, 2).reshape(B, N, D))
