"""The decode backends' shared interface: every KV cache attends as causal attention over what was written, the
backend config reaches its backend, and the reference path runs without any backend loaded."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from builders import build_decode_backend, build_generation
from conditioners.tensors import ConditionTensors
from lm.attention import CrossAttention
from lm.backends.compiled import FusedCrossAttention, HalfKVCache, HalfLinear, is_compiled
from lm.backends.config import DecodeBackendConfig, with_backend
from lm.backends.int8_cache import Int8KVCache
from lm.backends.quantize import Int8Linear
from lm.kv_cache import KVCache
from lm.lm import LMConfig, LMModel

ROOT = Path(__file__).resolve().parents[2]


# Max |error| against attention over the exact keys and values (unit-variance inputs): fp32 rounding; fp16 rounding
# of the cache; int8 rounding of the cache (measured 3.6e-7, 9.3e-4 and 1.6e-2 on this seed).
@pytest.mark.parametrize("cache_class, tolerance", [(KVCache, 1e-6), (HalfKVCache, 1e-2), (Int8KVCache, 5e-2)])
def test_every_cache_attends_as_causal_attention_over_what_was_written(cache_class, tolerance):
    torch.manual_seed(0)
    B, H, S, Dh = 2, 3, 12, 16
    queries, keys, values = torch.randn(3, B, H, S, Dh).unbind(0)
    expected = F.scaled_dot_product_attention(queries, keys, values, is_causal=True)  # [B, H, S, Dh]
    cache = cache_class.allocate(B, H, Dh, capacity=S, dtype=torch.float32, device=torch.device("cpu"))
    chunks = [(0, 4), (4, 7)] + [(start, start + 1) for start in range(7, S)]  # two prefills, then single steps
    outputs = []
    for start, end in chunks:
        cache.write(keys[:, :, start:end], values[:, :, start:end], start=start)
        outputs.append(cache.attend(queries[:, :, start:end], past=start))
    error = (torch.cat(outputs, dim=2) - expected).abs().max().item()
    assert error < tolerance, error
    if cache_class is not KVCache:
        assert error > 1e-5, "the cache stores rounded keys and values"


@pytest.fixture
def model() -> LMModel:
    config = LMConfig(num_codebooks=2, card=16, dim=32, num_heads=2, num_layers=2, ffn_dim=64)
    return LMModel(config).eval()


def cache_types(model: LMModel) -> set[type]:
    conditions = ConditionTensors(cross=torch.randn(1, 3, 32), cross_mask=torch.ones(1, 3, dtype=torch.bool))
    return {type(cache) for cache in model.start_decoding(1, capacity=4, conditions=conditions).caches}


def test_each_backend_config_swaps_its_modules_on_a_copy(model):
    assert with_backend(model, DecodeBackendConfig()) is model
    int8 = with_backend(model, DecodeBackendConfig(weights="int8"))
    assert isinstance(int8.heads, Int8Linear) and cache_types(int8) == {KVCache}
    compiled = with_backend(model, DecodeBackendConfig(compile=True))
    assert is_compiled(compiled) and isinstance(compiled.heads, nn.Linear) and cache_types(compiled) == {KVCache}
    cross_attentions = [module for module in compiled.modules() if isinstance(module, CrossAttention)]
    assert cross_attentions and all(type(module) is FusedCrossAttention for module in cross_attentions)
    half = with_backend(model, DecodeBackendConfig(compile=True, weights="fp16"))
    assert isinstance(half.heads, HalfLinear) and cache_types(half) == {HalfKVCache}
    half_int8 = with_backend(model, DecodeBackendConfig(compile=True, weights="fp16", int8_kv_cache=True))
    assert isinstance(half_int8.heads, HalfLinear) and cache_types(half_int8) == {Int8KVCache}
    # the caller's model is still the reference
    assert not is_compiled(model) and isinstance(model.heads, nn.Linear) and cache_types(model) == {KVCache}
    assert not any(isinstance(module, FusedCrossAttention) for module in model.modules())


def test_invalid_backend_config_is_refused_by_name():
    with pytest.raises(ValueError, match="weights"):
        DecodeBackendConfig(weights="int4")


def test_generate_py_keeps_the_backend_keys_on_the_command_line():
    overrides = ["checkpoint=RUN", "compile=true", "weights=fp16", "int8_kv_cache=true", "top_k=7"]
    for config_name in ("generate", "adherence"):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
        assert build_decode_backend(cfg) == DecodeBackendConfig(weights="fp16", compile=True, int8_kv_cache=True)
        assert build_generation(cfg).top_k == 7 and not hasattr(build_generation(cfg), "compile")


def test_the_reference_path_loads_no_backend():
    """The model, the cache, the attention and the decode loop run without lm/backends/: none of them imports it."""
    reference = "lm.attention, lm.kv_cache, lm.transformer, lm.lm, lm.sampling, lm.patterns, lm.generator"
    code = f"import sys, {reference}; print(sorted(name for name in sys.modules if name.startswith('lm.backends')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
