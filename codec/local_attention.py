"""Local windowed self-attention for a codec's lowest resolution (SNAC, Siuzdak et al. 2024).

The sequence is cut into non-overlapping windows of `window_size` frames; each frame attends to every frame of
its own window (not causal, nothing crosses a window border). Positions are rotary (RoFormer), counted from 0 in
each window, so every window is processed alike. Pre-norm with a residual connection:

    x + out(attention(rotary(q), rotary(k), v))    q, k, v = qkv(layer_norm(x))
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from lm.attention import rotate
from lm.transformer import rotary_tables

ROTARY_MAX_PERIOD = 10_000.0  # RoFormer's base, as SNAC


class LocalWindowAttention(nn.Module):
    """[B, C, T] -> [B, C, T], T a multiple of window_size; C / head_dim heads."""

    def __init__(self, dim: int, window_size: int, head_dim: int) -> None:
        super().__init__()
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"head_dim must be an even number >= 2 (rotary pairs), got {head_dim}")
        if dim % head_dim:
            raise ValueError(f"the attention width ({dim}) must be a multiple of head_dim ({head_dim})")
        self.window_size = window_size
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, C, T = x.shape
        if T % self.window_size:
            raise ValueError(f"local attention needs a multiple of window_size={self.window_size} frames, got {T}")
        q, k, v = self.qkv(self.norm(rearrange(x, "b c t -> b t c"))).chunk(3, dim=-1)  # each [B, T, C]
        q, k, v = (
            rearrange(tensor, "b (w n) (h d) -> b h w n d", n=self.window_size, h=self.num_heads) for tensor in (q, k, v)
        )  # [B, H, T / window, window, head_dim]
        cos, sin = rotary_tables(torch.arange(self.window_size, device=x.device), self.head_dim, ROTARY_MAX_PERIOD)
        attended = F.scaled_dot_product_attention(rotate(q, cos, sin), rotate(k, cos, sin), v)
        attended = rearrange(attended, "b h w n d -> b (w n) (h d)")  # [B, T, C]
        return x + rearrange(self.out(attended), "b t c -> b c t")
