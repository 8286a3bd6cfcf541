import pytest
import torch
from torch._dynamo.utils import counters

from conditioners.tensors import ConditionTensors
from lm.backends import int8_cache
from lm.backends.compiled import compile_decoding, one_query_attention
from lm.backends.config import DecodeBackendConfig
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern
from tests.lm.test_lm_compiled import CARD, DIM, K, decode_all


@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("length", [1, 37, 48])  # under a block of 16, between blocks, a whole number of blocks
def test_int8_kernel_equals_attention_over_the_dequantized_cache(head_dim, length):
    int8_cache.load_kernel()
    torch.manual_seed(0)
    keys, key_scales = int8_cache.quantize(3 * torch.randn(2, 3, 50, head_dim))  # scores spread over several units
    values, value_scales = int8_cache.quantize(torch.randn(2, 3, 50, head_dim))
    query = torch.randn(2, 3, 1, head_dim)
    out = torch.ops.codeclm.int8_decode_attention(query, keys, key_scales, values, value_scales, length)
    expected = one_query_attention(query, int8_cache.dequantize(keys[:, :, :length], key_scales[:, :, :length]),
                                   int8_cache.dequantize(values[:, :, :length], value_scales[:, :, :length]))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # positions past `length` are not read
    later = torch.ops.codeclm.int8_decode_attention(query, keys.index_fill(2, torch.tensor([length + 1]), 99),
                                                    key_scales, values, value_scales, length)
    assert torch.equal(later, out)


def test_int8_kernel_refuses_an_unsupported_head_dim_and_length():
    int8_cache.load_kernel()
    keys, scales = int8_cache.quantize(torch.randn(1, 1, 4, 24))
    with pytest.raises(RuntimeError, match="head dim"):
        torch.ops.codeclm.int8_decode_attention(torch.randn(1, 1, 1, 24), keys, scales, keys, scales, 2)
    keys, scales = int8_cache.quantize(torch.randn(1, 1, 4, 16))
    with pytest.raises(RuntimeError, match="length"):
        torch.ops.codeclm.int8_decode_attention(torch.randn(1, 1, 1, 16), keys, scales, keys, scales, 5)


def test_int8_kv_cache_returns_filled_prefix_within_int8_rounding():
    cache = int8_cache.Int8KVCache.allocate(batch_size=1, num_heads=2, head_dim=4, capacity=5, dtype=torch.float32,
                                            device=torch.device("cpu"))
    first = torch.randn(1, 2, 3, 4)
    cache.write(first, first, start=0)
    second = torch.randn(1, 2, 1, 4)
    cache.write(second, -second, start=3)
    keys, values = cache.prefix(4)
    expected = torch.cat([first, second], dim=2), torch.cat([first, -second], dim=2)
    for got, want in zip((keys, values), expected):
        assert got.shape == want.shape
        # each element within half an int8 step (its vector's absmax / 127) of the written value
        step = want.abs().amax(dim=-1, keepdim=True) / 127
        assert ((got - want).abs() <= step / 2 * 1.001).all() and not torch.equal(got, want)


def test_compiled_int8_kv_cache_stays_within_int8_rounding_of_fp32():
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=128)).eval()
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM),
                                  cross_mask=torch.arange(5)[None] < torch.tensor([[3], [0]]))
    sequence = DelayPattern(K).get_pattern(40).build(torch.randint(0, CARD, (2, K, 40)), special_token=CARD)
    torch._dynamo.reset()
    counters.clear()
    eager = decode_all(model, sequence, conditions)
    int8 = decode_all(compile_decoding(model, int8_kv_cache=True), sequence, conditions)
    error = (int8 - eager).abs().max().item()
    # measured 1.8e-3 against a logit range of 2.3: int8 rounding of the cache (not 0), and no more than that
    assert 1e-4 < error < 1e-2 * eager.abs().max().item(), error
    assert counters["stats"]["unique_graphs"] >= 2, "the one-step calls ran the compiled graph"


def test_int8_kv_cache_is_refused_without_compile():
    with pytest.raises(ValueError, match="int8_kv_cache=True needs compile=True"):
        DecodeBackendConfig(int8_kv_cache=True)
