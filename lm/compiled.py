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
"""
import copy

import torch
import torch._inductor.config

from lm.lm import LMModel

# Inductor settings for the decode graph: weights as constants (needed for the prepacked C++ GEMM), and the C++ GEMM
# template chosen for the matmuls. Applied only while the compiled step runs, so the caller's own torch.compile
# calls keep their settings.
CPU_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP"}


def compile_decoding(model: LMModel) -> LMModel:
    """A copy of `model` whose one-step decode calls run a torch.compile graph (compiled at the first calls).

    Refused, naming the reason, for a model not on the CPU or not fp32.
    """
    weight = model.embedding.weight
    if weight.device.type != "cpu":
        raise ValueError(f"compile=True compiles CPU decoding only, got a model on {weight.device}; use compile=False")
    if weight.dtype != torch.float32:
        raise ValueError(f"compile=True compiles an fp32 model, got {weight.dtype}")
    compiled = copy.deepcopy(model).eval().requires_grad_(False)
    step = torch.compile(compiled.step)

    def compiled_step(*args):
        with torch._inductor.config.patch(CPU_OPTIONS):
            return step(*args)

    compiled.compiled_step = compiled_step
    return compiled
