"""An int8 KV cache for compiled CPU decoding (lm/compiled.py, `kv_cache="int8"`).

Late in a generation with CFG, reading the KV cache is a third of a compiled fp16 step (docs/decode_speed.md), and
on CPU that read is bound by memory bandwidth. Int8 halves it again: each cached key or value vector [D / H] is
stored as int8 with one fp32 scale (its absolute maximum / 127), as HF transformers' quantized caches do with int4.

One-step attention over the int8 cache runs a C++ kernel (lm/int8_attention.cpp, AVX2) that converts the cache as it
reads it; torch has no such kernel, and Inductor's reductions load int8 eight bytes at a time through a buffer,
3x slower than over fp16. The kernel is compiled once per machine on first use (about 50 s; torch's extension
build cache keeps it) and registered as `torch.ops.codeclm.int8_decode_attention`, which a torch.compile graph
calls as an opaque op.
"""
import functools
import platform
from pathlib import Path

import torch

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
