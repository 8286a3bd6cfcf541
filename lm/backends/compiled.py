"""Compiled decoding on CPU (`compile=True`): a copy of the LM whose one-step decode calls run one torch.compile graph.

Why compiling pays on CPU: a decode step at a small batch multiplies a few rows by every weight matrix, so it is
bound by how fast the weights stream from memory. Inductor's own C++ GEMM (`max_autotune` with the CPP backend, on
weights frozen into the graph and prepacked) streams them much faster than MKL's fp32 matmul does at 2-4 rows, and
Inductor fuses the layer norms, residual adds, GELU and cache writes around them. docs/decode_speed.md has the
measurements.

How the step stays one graph for a whole generation:
- `LMModel.step` takes the filled cache length `past` as a plain int argument; Dynamo compiles once for the first
  value and once more, symbolically, when it changes, then reuses that graph for every later step (a third graph
  serves the last step, where the filled prefix is the whole, contiguous buffer). The caches are dataclasses of
  tensors, so new caches for a new generation match the same graph.
- A new batch size (the CFG-doubled batch), condition length or capacity compiles once more, and then becomes
  symbolic too.
- Prefills (several steps in one call) run eagerly: they happen once per generation window.

Freezing folds the weights into the graph as constants, so the compiled model is a copy, made when
`compile_decoding` is called; the caller's model is untouched and later changes to it are not seen.
Each copy compiles its own copy of `step`'s code object: Dynamo keeps compiled graphs on the code object and limits
them per code object, so copies sharing `LMModel.step` would exhaust the limit and fall back to eager decoding.
(Dynamo does not free a deleted copy's graphs, nor the weights frozen into them.)

What the copy swaps in (modules.py), beside the compiled step:
- every CrossAttention becomes a `FusedCrossAttention`: a one-step call is `one_query_attention`, which Inductor
  fuses into the graph, where SDPA's CPU kernel would spend longer setting up than reading a short memory;
- `weights="fp16"`: every Linear becomes a `HalfLinear` and the KV cache a `HalfKVCache`, halving the bytes a step
  streams. Inductor's GEMM and the fused attention convert fp16 to fp32 as they read, which on AVX2 caps the gain
  below 2x;
- `int8_kv_cache=True`: the KV cache becomes an `Int8KVCache` (int8_cache.py), read by its C++ kernel.
"""
import copy
import math
import types
from dataclasses import dataclass

import torch
import torch._inductor.config
import torch.nn.functional as F
from torch import nn

from lm.attention import CrossAttention, CrossMemory, SelfAttention
from lm.backends import int8_cache
from lm.backends.modules import replace_linears, retype
from lm.kv_cache import KVCache
from lm.lm import LMModel

WEIGHTS = ("fp32", "fp16")

# Inductor settings for the decode graph: weights as constants (needed for the prepacked C++ GEMM), and the C++ GEMM
# template chosen for the matmuls. Applied only while the compiled step runs, so the caller's own torch.compile
# calls keep their settings.
CPU_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of one query step over L keys, computed in q's dtype from keys and values of any float dtype.
    q [B, H, 1, D / H], k, v [B, H, L, D / H], mask [B, 1, 1, L] (True = visible) or None -> [B, H, 1, D / H].

    Written as multiply-and-sum reductions, which Inductor fuses into one kernel: over an fp16 cache it converts
    as it reads (SDPA's CPU kernels are slow on fp16), and over a short condition memory it skips SDPA's per-call
    setup.
    """
    scores = (q * k.to(q.dtype)).sum(dim=-1, keepdim=True) / math.sqrt(q.shape[-1])  # [B, H, L, 1]
    if mask is not None:
        scores = scores.masked_fill(~mask.transpose(-1, -2), -math.inf)
    return (scores.softmax(dim=-2) * v.to(q.dtype)).sum(dim=-2, keepdim=True)


class FusedCrossAttention(CrossAttention):
    """CrossAttention whose one-step calls are `one_query_attention`; prefills keep SDPA."""

    def forward(self, x: torch.Tensor, memory: CrossMemory) -> torch.Tensor:
        B, N, D = x.shape
        if N > 1:
            return super().forward(x, memory)
        q = self.query(x).view(B, 1, self.num_heads, D // self.num_heads).transpose(1, 2)  # [B, H, 1, D / H]
        out = one_query_attention(q, memory.keys, memory.values, None if memory.all_visible else memory.mask)
        return self.out(out.transpose(1, 2).reshape(B, 1, D))


@dataclass
class HalfKVCache(KVCache):
    """keys, values: [B, H, capacity, D / H] fp16, for an fp32 model. One step attends with `one_query_attention`,
    converting as it reads; prefills attend with SDPA over the prefix converted to fp32."""

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "HalfKVCache":
        return super().allocate(batch_size, num_heads, head_dim, capacity, dtype=torch.float16, device=device)

    def prefix(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of positions 0 .. end - 1 converted to fp32, [B, H, end, D / H]."""
        return self.keys[:, :, :end].float(), self.values[:, :, :end].float()

    def attend(self, queries: torch.Tensor, past: int) -> torch.Tensor:
        if queries.shape[2] > 1:
            return super().attend(queries, past)
        return one_query_attention(queries, self.keys[:, :, :past + 1], self.values[:, :, :past + 1])


class HalfCacheAttention(SelfAttention):
    """SelfAttention that decodes over a `HalfKVCache`."""

    def make_cache(self, batch_size: int, capacity: int, dtype: torch.dtype, device: torch.device) -> HalfKVCache:
        return HalfKVCache.allocate(batch_size, self.num_heads, self.head_dim, capacity, dtype=dtype, device=device)


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


class CompiledStep:
    """A compiled copy's `LMModel.step`: one-step calls run the torch.compile graph, prefills the eager step."""

    def __init__(self, model: LMModel):
        self.eager = model.step
        self.graph = torch.compile(_own_code(model.step))

    def __call__(self, sequence: torch.Tensor, *arguments) -> torch.Tensor:
        """`LMModel.step`'s arguments: sequence [B, K, N], add, past, positions, memories, caches."""
        if sequence.shape[2] > 1:
            return self.eager(sequence, *arguments)
        with torch._inductor.config.patch(CPU_OPTIONS):
            return self.graph(sequence, *arguments)


def is_compiled(model: LMModel) -> bool:
    """Whether `model` is a `compile_decoding` copy."""
    return isinstance(vars(model).get("step"), CompiledStep)


def compile_decoding(model: LMModel, weights: str = "fp32", int8_kv_cache: bool = False) -> LMModel:
    """A copy of `model` whose one-step decode calls run a torch.compile graph (compiled at the first calls).

    weights:       "fp32", or "fp16" for fp16 Linears (`HalfLinear`) and an fp16 KV cache; embeddings, norms,
                   attention arithmetic and the logits stay fp32.
    int8_kv_cache: an int8 KV cache whatever the weights (int8_cache.py; builds its kernel on first use).
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
    retype(compiled, CrossAttention, FusedCrossAttention)
    if int8_kv_cache:
        int8_cache.load_kernel()  # now: refused here on a CPU without AVX2, and built before the graph calls it
        retype(compiled, SelfAttention, int8_cache.Int8CacheAttention)
    elif weights == "fp16":
        retype(compiled, SelfAttention, HalfCacheAttention)
    if weights == "fp16":
        replace_linears(compiled, HalfLinear)
    compiled.step = CompiledStep(compiled)  # an instance attribute: `decode` calls it in place of the method
    return compiled


def _own_code(method: types.MethodType) -> types.MethodType:
    """`method` bound to a new copy of its function's code object, which Dynamo's graph cache is kept on."""
    function = method.__func__
    fresh = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__,
                               function.__defaults__, function.__closure__)
    return types.MethodType(fresh, method.__self__)
