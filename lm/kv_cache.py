"""A preallocated key/value cache for one self-attention layer.

The buffers are allocated once for a batch size and a capacity; each decode call writes its keys and values in
place at the current length and advances the length. Nothing is concatenated or reallocated per step, and
attention reads only the filled prefix `[:length]`, so the cost of a step grows only with the attention itself.
"""
import torch
from torch import nn


class KVCache(nn.Module):
    """keys, values: [B, H, capacity, D / H]; `length` positions are filled."""

    def __init__(self, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device):
        super().__init__()
        shape = (batch_size, num_heads, capacity, head_dim)
        self.register_buffer("keys", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("values", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # A plain int: the decode loop needs it to slice the filled prefix, and reading a device tensor would sync.
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write keys, values [B, H, N, D / H] after the filled prefix; return the filled prefix views [B, H, length, D / H].
        `LMModel.decode` refuses a step past the capacity before any layer runs."""
        start, end = self.length, self.length + keys.shape[2]
        self.keys[:, :, start:end].copy_(keys)
        self.values[:, :, start:end].copy_(values)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]
