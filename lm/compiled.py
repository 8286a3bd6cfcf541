"""Compiled decoding on CPU: each one-step `LMModel.decode` call runs one torch.compile graph.

What compiling buys on CPU: a decode step at a small batch multiplies a few rows by every weight matrix, so it is
bound by how fast the weights stream from memory. MKL's fp32 matmul streams them at 3-6 GB/s on 2-4 rows on this
project's 2-core machine; Inductor's own C++ GEMM (`max_autotune` with the CPP backend, on weights frozen into the
graph and prepacked) at 14-20 GB/s, near the machine's 20 GB/s. Inductor also fuses the layer norms, residual adds,
GELU and cache writes around them.
docs/decode_speed.md has the measurements.

How the step stays one graph for a whole generation:
- `LMModel.step` takes the filled cache length `past` as a plain int argument; Dynamo compiles once for the first
  value and once more, symbolically, when it changes, then reuses that graph for every later step (a third graph
  serves the last step, where the filled prefix is the whole, contiguous buffer). The caches are
  `KVCache` dataclasses of tensors, so new caches for a new generation match the same graph.
- A new batch size (the CFG-doubled batch), condition length or capacity compiles once more, and then becomes
  symbolic too.
- Prefills (several steps in one call) run eagerly: they happen once per generation window.

Freezing folds the weights into the graph as constants, so the compiled model is a copy, made when
`compile_decoding` is called; the caller's model is untouched and later changes to it are not seen.

Each copy compiles its own copy of `step`'s code object: Dynamo keeps compiled graphs on the code object and
limits them to 8 per code object, so with one shared `LMModel.step` the fourth compiled copy in a process went
back to eager decoding. (Dynamo does not free a deleted copy's graphs, nor the weights frozen into them.)

`weights="fp16"` halves the bytes a step streams: the copy's Linears and its KV cache are fp16. Inductor's C++
GEMM reads fp16 weights and accumulates in fp32, and a one-step attention written as multiply-and-sum reductions
(`attention.one_query_attention`) reads the fp16 cache in one fused kernel. Both convert to fp32 as they read,
which caps them at about 10 GB/s of fp16 on 2 AVX2 cores: a step is 1.3-1.5x faster, not 2x.

`int8_kv_cache=True` stores the cache in int8 with a scale per vector (lm/int8_cache.py); one-step attention reads
it in a C++ kernel that the graph calls. It halves what the attention reads over an fp16 cache, which is what
grows as a generation gets longer.
"""
import copy
import types

import torch
import torch._inductor.config
import torch.nn.functional as F
from torch import nn

from lm import int8_cache
from lm.lm import LMModel
from lm.quantize import replace_linears

WEIGHTS = ("fp32", "fp16")

# Inductor settings for the decode graph: weights as constants (needed for the prepacked C++ GEMM), and the C++ GEMM
# template chosen for the matmuls. Applied only while the compiled step runs, so the caller's own torch.compile
# calls keep their settings.
CPU_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}


class HalfLinear(nn.Module):
    """A frozen nn.Linear whose weights [out, in] (and bias) are stored in fp16.

    In the compiled graph its input is rounded to fp16 and the product accumulates in fp32 (one fp16 GEMM);
    eager calls (prefills) multiply in fp32 by the fp16-rounded weights, since ATen's fp16 CPU matmul is slow.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().half())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().half())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out], in x's dtype."""
        if torch.compiler.is_compiling():
            return F.linear(x.half(), self.weight, self.bias).to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


def compile_decoding(model: LMModel, weights: str = "fp32", int8_kv_cache: bool = False) -> LMModel:
    """A copy of `model` whose one-step decode calls run a torch.compile graph (compiled at the first calls).

    weights:       "fp32", or "fp16" for fp16 Linears (`HalfLinear`) and an fp16 KV cache; embeddings, norms,
                   attention arithmetic and the logits stay fp32.
    int8_kv_cache: an int8 KV cache whatever the weights (lm/int8_cache.py; builds its kernel on first use).
    Refused, naming the reason, for a model not on the CPU or not fp32.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS} for compiled decoding, got {weights!r}")
    weight = model.embedding.weight
    if weight.device.type != "cpu":
        raise ValueError(f"compile=True compiles CPU decoding only, got a model on {weight.device}; use compile=False")
    if weight.dtype != torch.float32:
        raise ValueError(f"compile=True compiles an fp32 model, got {weight.dtype}")
    compiled = copy.deepcopy(model).eval().requires_grad_(False)
    if weights == "fp16":
        replace_linears(compiled, HalfLinear)
        compiled.cache_dtype = torch.float16
    if int8_kv_cache:
        int8_cache.load_kernel()  # before tracing: the graph calls the op it registers
        compiled.cache_dtype = torch.int8
    step = torch.compile(_own_code(compiled.step))

    def compiled_step(*args):
        with torch._inductor.config.patch(CPU_OPTIONS):
            return step(*args)

    compiled.compiled_step = compiled_step
    return compiled


def _own_code(method: types.MethodType) -> types.MethodType:
    """`method` bound to a new copy of its function's code object, which Dynamo's graph cache is kept on."""
    function = method.__func__
    fresh = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                               function.__defaults__, function.__closure__)
    return types.MethodType(fresh, method.__self__)
