"""An int8 KV cache (`int8_kv_cache=True`): each cached key or value vector [D / H] is stored as int8 with one fp32
scale (its absolute maximum / 127), as HF transformers' quantized caches do with int4.

Late in a generation, reading the KV cache is a large share of a compiled step, and on CPU that read is bound by
memory bandwidth: int8 halves it again after fp16 (docs/decode_speed.md). One-step attention over the int8 cache
runs a C++ kernel (int8_attention.cpp, AVX2) that converts the cache as it reads it; torch has no such kernel, and
Inductor's reductions load int8 through a buffer, slower than they read fp16. The kernel is compiled once per
machine on first use (torch's extension build cache keeps it) and registered as
`torch.ops.codeclm.int8_decode_attention`, which a torch.compile graph calls as an opaque op.
"""
import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from lm.attention import SelfAttention
from lm.kv_cache import KVCache

SOURCE = Path(__file__).with_name("int8_attention.cpp")


@functools.cache
def load_kernel() -> None:
    """Build (or load the built) int8 attention kernel and register `torch.ops.codeclm.int8_decode_attention`.
    Refused, naming the reason, on a CPU without AVX2."""
    if platform.machine() not in ("x86_64", "AMD64") or torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        raise ValueError(f"the int8 KV cache needs an x86 CPU with AVX2, got {platform.machine()} with "
                         f"{torch.backends.cpu.get_cpu_capability()}")
    from torch.utils import cpp_extension  # here: importing it logs a CUDA warning on machines without CUDA

    # -fopenmp: at::parallel_for runs its rows on torch's threads; CPU_CAPABILITY_AVX2: ATen's AVX2 vector exp
    flags = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-DCPU_CAPABILITY_AVX2"]
    cpp_extension.load(name="codeclm_int8_attention", sources=[str(SOURCE)], extra_cflags=flags,
                       is_python_module=False)

    @torch.library.register_fake("codeclm::int8_decode_attention")
    def _(query, keys, key_scales, values, value_scales, length):
        return torch.empty_like(query)


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., Dh] float -> (int8 [..., Dh], fp32 scales [...]) with x ~= scales[..., None] * int8."""
    scales = x.float().abs().amax(dim=-1).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return (x / scales[..., None]).round().to(torch.int8), scales


def dequantize(x: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """int8 [..., Dh], scales [...] -> fp32 [..., Dh]."""
    return x.float() * scales[..., None]


@dataclass
class Int8KVCache(KVCache):
    """keys, values: [B, H, capacity, D / H] int8; key_scales, value_scales: [B, H, capacity] fp32. A cached vector
    is its scale times its int8 vector. For an fp32 model."""

    key_scales: torch.Tensor
    value_scales: torch.Tensor

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "Int8KVCache":
        load_kernel()  # one-step `attend` calls it
        shape = (batch_size, num_heads, capacity, head_dim)
        return cls(keys=torch.zeros(shape, dtype=torch.int8, device=device),
                   values=torch.zeros(shape, dtype=torch.int8, device=device),
                   key_scales=torch.zeros(shape[:3], device=device), value_scales=torch.zeros(shape[:3], device=device))

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        end = start + keys.shape[2]
        for buffer, scales, new in ((self.keys, self.key_scales, keys), (self.values, self.value_scales, values)):
            quantized, new_scales = quantize(new)
            buffer[:, :, start:end].copy_(quantized)
            scales[:, :, start:end].copy_(new_scales)

    def prefix(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of positions 0 .. end - 1 dequantized to fp32, [B, H, end, D / H]."""
        return (dequantize(self.keys[:, :, :end], self.key_scales[:, :, :end]),
                dequantize(self.values[:, :, :end], self.value_scales[:, :, :end]))

    def attend(self, queries: torch.Tensor, past: int) -> torch.Tensor:
        """As `KVCache.attend`; one step reads the int8 cache in the kernel, prefills the dequantized prefix."""
        if queries.shape[2] > 1:
            return super().attend(queries, past)
        return torch.ops.codeclm.int8_decode_attention(queries, self.keys, self.key_scales, self.values,
                                                       self.value_scales, past + 1)


class Int8CacheAttention(SelfAttention):
    """SelfAttention that decodes over an `Int8KVCache` (swapped in by `modules.retype`)."""

    def make_cache(self, batch_size: int, capacity: int, dtype: torch.dtype, device: torch.device) -> Int8KVCache:
        return Int8KVCache.allocate(batch_size, self.num_heads, self.head_dim, capacity, dtype=dtype, device=device)
