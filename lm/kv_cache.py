"""A preallocated key/value cache for one self-attention layer, and the attention of new steps over it.

The buffers are allocated once for a batch size and a capacity; each decode call writes its keys and values in
place after the filled prefix. Nothing is concatenated or reallocated per step, and attention reads only the filled
prefix, so the cost of a step grows only with the attention itself. The cache does not count what it holds: the
caller passes the filled length (`DecodeState.length`), a plain int, so a compiled decode step sees it as an
argument rather than as state it would have to guard on.

The cache attends (`attend`): a cache that stores its keys and values another way (fp16, int8: lm/backends/) is a
subclass that brings the attention reading them, and `SelfAttention` is the same whatever cache it is given.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class KVCache:
    """keys, values: [B, H, capacity, D / H], in the model's dtype."""

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "KVCache":
        """dtype: the model's, in which keys and values are computed."""
        shape = (batch_size, num_heads, capacity, head_dim)
        return cls(keys=torch.zeros(shape, dtype=dtype, device=device),
                   values=torch.zeros(shape, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Write keys, values [B, H, N, D / H] at positions start .. start + N - 1. `LMModel.decode` refuses a step
        past the capacity before any layer runs."""
        end = start + keys.shape[2]
        self.keys[:, :, start:end].copy_(keys)
        self.values[:, :, start:end].copy_(values)

    def prefix(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of positions 0 .. end - 1, [B, H, end, D / H]."""
        return self.keys[:, :, :end], self.values[:, :, :end]

    def attend(self, queries: torch.Tensor, past: int) -> torch.Tensor:
        """queries [B, H, N, D / H] of the N positions after `past` cached ones, their keys and values written
        -> [B, H, N, D / H]: each query attends to every position up to its own."""
        N = queries.shape[2]
        keys, values = self.prefix(past + N)  # [B, H, past + N, D / H]
        if N == 1:
            return F.scaled_dot_product_attention(queries, keys, values)  # one new step sees the whole prefix
        if past == 0:
            return F.scaled_dot_product_attention(queries, keys, values, is_causal=True)
        visible = torch.ones(N, past + N, dtype=torch.bool, device=queries.device).tril(diagonal=past)
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=visible)
