"""A preallocated key/value cache for one self-attention layer.

The buffers are allocated once for a batch size and a capacity; each decode call writes its keys and values in
place after the filled prefix. Nothing is concatenated or reallocated per step, and attention reads only the filled
prefix, so the cost of a step grows only with the attention itself. The cache does not count what it holds: the
caller passes the filled length (`DecodeState.length`), a plain int, so a compiled decode step (lm/compiled.py)
sees it as an argument rather than as state it would have to guard on.
"""
from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    """keys, values: [B, H, capacity, D / H]."""

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "KVCache":
        shape = (batch_size, num_heads, capacity, head_dim)
        return cls(keys=torch.zeros(shape, dtype=dtype, device=device),
                   values=torch.zeros(shape, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write keys, values [B, H, N, D / H] at positions start .. start + N - 1; return the filled prefix views
        [B, H, start + N, D / H]. `LMModel.decode` refuses a step past the capacity before any layer runs."""
        end = start + keys.shape[2]
        self.keys[:, :, start:end].copy_(keys)
        self.values[:, :, start:end].copy_(values)
        return self.keys[:, :, :end], self.values[:, :, :end]
