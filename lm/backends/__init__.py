"""Decode backends: faster copies of an `LMModel` for generation, made from outside the reference path.

lm/ is the reference (eager, the model's dtype, SDPA, `KVCache`). A backend copies a model and swaps modules on the
copy, as Moshi's quantize utilities replace Linears; the caller's model is untouched. Files:

    config.py          DecodeBackendConfig (weights, compile, int8_kv_cache) and `with_backend`, the one entry
    quantize.py        weights="int8": `Int8Linear`, fbgemm's dynamic int8 matmul, eager
    compiled.py        compile=True: `CompiledStep`, one torch.compile graph per one-step decode call;
                       `FusedCrossAttention`; weights="fp16": `HalfLinear`, `HalfKVCache`
    int8_cache.py      int8_kv_cache=True: `Int8KVCache` and its C++ attention kernel (int8_attention.cpp)
    modules.py         the swaps: `replace_linears`, `retype`

What a backend may replace: a Linear by a module computing the same product; `SelfAttention` by a subclass whose
`make_cache` allocates another `KVCache` subclass (same `write`, `prefix`, `attend`); `CrossAttention` by a subclass;
and a copy's `LMModel.step` by `CompiledStep`.
"""
