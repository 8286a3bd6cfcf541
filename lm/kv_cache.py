"""A preallocated key/value cache for one self-attention layer.

The buffers are allocated once for a batch size and a capacity; each decode call writes its keys and values in
place after the filled prefix. Nothing is concatenated or reallocated per step, and attention reads only the filled
prefix, so the cost of a step grows only with the attention itself. The cache does not count what it holds: the
caller passes the filled length (`DecodeState.length`), a plain int, so a compiled decode step (lm/compiled.py)
sees it as an argument rather than as state it would have to guard on.
"""
from dataclasses import dataclass

import torch

from lm import int8_cache


@dataclass
class KVCache:
    """keys, values: [B, H, capacity, D / H]. An int8 cache (lm/int8_cache.py) also holds key_scales, value_scales
    [B, H, capacity]: a cached vector is its scale times its int8 vector."""

    keys: torch.Tensor
    values: torch.Tensor
    key_scales: torch.Tensor | None = None
    value_scales: torch.Tensor | None = None

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "KVCache":
        shape = (batch_size, num_heads, capacity, head_dim)
        cache = cls(keys=torch.zeros(shape, dtype=dtype, device=device),
                    values=torch.zeros(shape, dtype=dtype, device=device))
        if dtype == torch.int8:
            cache.key_scales = torch.zeros(shape[:3], device=device)
            cache.value_scales = torch.zeros(shape[:3], device=device)
        return cache

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    @property
    def quantized(self) -> bool:
        return self.key_scales is not None

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Write keys, values [B, H, N, D / H] at positions start .. start + N - 1. `LMModel.decode` refuses a step
        past the capacity before any layer runs."""
        end = start + keys.shape[2]
        if not self.quantized:
            self.keys[:, :, start:end].copy_(keys)
            self.values[:, :, start:end].copy_(values)
            return
        for buffer, scales, new in ((self.keys, self.key_scales, keys), (self.values, self.value_scales, values)):
            quantized, new_scales = int8_cache.quantize(new)
            buffer[:, :, start:end].copy_(quantized)
            scales[:, :, start:end].copy_(new_scales)

    def prefix(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of positions 0 .. end - 1, [B, H, end, D / H]: views of a float cache, an int8
        cache's dequantized to fp32."""
        if not self.quantized:
            return self.keys[:, :, :end], self.values[:, :, :end]
        return (int8_cache.dequantize(self.keys[:, :, :end], self.key_scales[:, :, :end]),
                int8_cache.dequantize(self.values[:, :, :end], self.value_scales[:, :, :end]))
