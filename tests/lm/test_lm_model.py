import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

from conditioners.tensors import ConditionTensors
from lm.kv_cache import KVCache
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern, MusicLMPattern, ParallelPattern, UnrolledPattern, VallePattern
from lm.transformer import Transformer

CONFIGS = str(__import__("pathlib").Path(__file__).resolve().parents[2] / "configs")
K, CARD, DIM = 4, 16, 32


def tiny_model(positional: str = "sin", cross_attention: bool = True) -> LMModel:
    config = LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=64,
                      cross_attention=cross_attention, positional=positional)
    return LMModel(config).eval()


def conditions(B: int, lengths: list[int], prepend: int = 0, add: bool = False) -> ConditionTensors:
    L = max(lengths)
    return ConditionTensors(
        cross=torch.randn(B, L, DIM),
        cross_mask=torch.arange(L)[None, :] < torch.tensor(lengths)[:, None],
        prepend=torch.randn(B, prepend, DIM) if prepend else None,
        add=torch.randn(B, 1, DIM) if add else None,
    )


PATTERNS = [DelayPattern(K), ParallelPattern(K), UnrolledPattern(K), VallePattern(K), MusicLMPattern(K)]


@pytest.mark.parametrize("positional", ["sin", "rope"])
@pytest.mark.parametrize("provider", PATTERNS, ids=lambda provider: type(provider).__name__)
def test_cached_decoding_equals_full_forward(provider, positional):
    model = tiny_model(positional)
    codes = torch.randint(0, CARD, (2, K, 4))
    sequence = provider.get_pattern(4).build(codes, special_token=model.special_token)  # [B, K, S]
    condition = conditions(2, lengths=[3, 5], prepend=2, add=True)
    with torch.inference_mode():
        full = model(sequence, condition)
        state = model.start_decoding(2, capacity=sequence.shape[2], conditions=condition)
        chunks = [model.decode(sequence[:, :, :3], state)]  # a prefill, then one step at a time
        chunks += [model.decode(sequence[:, :, step:step + 1], state) for step in range(3, sequence.shape[2])]
    torch.testing.assert_close(torch.cat(chunks, dim=2), full, atol=1e-4, rtol=0)


def test_cache_buffers_are_written_in_place():
    model = tiny_model()
    state = model.start_decoding(1, capacity=6)
    pointer = state.caches[0].keys.data_ptr()
    with torch.inference_mode():
        for _ in range(6):
            model.decode(torch.full((1, K, 1), CARD), state)
    assert state.caches[0].keys.data_ptr() == pointer and state.length == 6
    assert state.caches[0].keys.abs().sum(dim=(0, 1, 3)).ne(0).all(), "every slot was filled"
    with pytest.raises(ValueError, match="capacity"):
        model.decode(torch.full((1, K, 1), CARD), state)


@pytest.mark.parametrize("positional", ["sin", "rope"])
def test_causality_by_gradient(positional):
    transformer = Transformer(dim=DIM, num_heads=4, num_layers=2, ffn_dim=64, cross_attention=False,
                              positional=positional, max_period=10000.0)
    x = torch.randn(1, 9, DIM, requires_grad=True)
    t = 4
    (transformer(x)[:, t] * torch.randn(DIM)).sum().backward()  # a plain sum of a LayerNorm output is constant
    per_step = x.grad.abs().sum(dim=(0, 2))  # [S]
    assert (per_step[t + 1:] == 0).all(), "no dependence on future steps"
    assert (per_step[:t + 1] > 0).all(), "dependence on every past step"


def test_fully_masked_memory_gives_no_nan_and_no_cross_contribution():
    model = tiny_model()
    sequence = torch.randint(0, CARD, (2, K, 6))
    masked = ConditionTensors(cross=torch.randn(2, 5, DIM), cross_mask=torch.zeros(2, 5, dtype=torch.bool))
    with torch.inference_mode():
        logits = model(sequence, masked)
        unconditional = model(sequence, None)
    assert not logits.isnan().any()
    torch.testing.assert_close(logits, unconditional)


def test_padding_is_invisible_to_cross_attention():
    """The same memory, padded with garbage to a longer length, gives the same logits."""
    model = tiny_model()
    sequence = torch.randint(0, CARD, (1, K, 6))
    short = conditions(1, lengths=[3])
    padded = ConditionTensors(cross=torch.cat([short.cross, 100 * torch.randn(1, 4, DIM)], dim=1),
                              cross_mask=torch.cat([short.cross_mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1))
    with torch.inference_mode():
        torch.testing.assert_close(model(sequence, padded), model(sequence, short), atol=1e-5, rtol=0)


def test_changing_the_condition_changes_the_logits():
    model = tiny_model()
    sequence = torch.randint(0, CARD, (1, K, 6))
    with torch.inference_mode():
        first = model(sequence, conditions(1, lengths=[4]))
        second = model(sequence, conditions(1, lengths=[4]))
    assert (first - second).abs().max() > 1e-2


def test_cross_condition_refused_without_cross_attention():
    model = tiny_model(cross_attention=False)
    with pytest.raises(ValueError, match="cross_attention"):
        model(torch.zeros(1, K, 3, dtype=torch.long), conditions(1, lengths=[2]))


def test_kv_cache_returns_filled_prefix():
    cache = KVCache.allocate(batch_size=1, num_heads=2, head_dim=4, capacity=5, dtype=torch.float32,
                             device=torch.device("cpu"))
    first = torch.randn(1, 2, 3, 4)
    cache.write(first, first, start=0)
    second = torch.randn(1, 2, 1, 4)
    cache.write(second, -second, start=3)
    keys, values = cache.prefix(4)
    expected = torch.cat([first, second], dim=2), torch.cat([first, -second], dim=2)
    for got, want in zip((keys, values), expected):
        assert got.shape == want.shape
        assert torch.equal(got, want)


@pytest.mark.parametrize("preset", ["musicgen_small", "musicgen_medium", "musicgen_large"])
def test_parameter_count_equals_hf_musicgen(preset):
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        model_config = LMConfig(**compose(config_name=None, overrides=[f"+lm={preset}"]).lm.model)
    hf_config = MusicgenDecoderConfig(vocab_size=model_config.card, num_codebooks=model_config.num_codebooks,
                                      hidden_size=model_config.dim, num_hidden_layers=model_config.num_layers,
                                      num_attention_heads=model_config.num_heads, ffn_dim=model_config.ffn_dim)
    with torch.device("meta"):
        ours = sum(p.numel() for p in LMModel(model_config).parameters())
        theirs = sum(p.numel() for p in MusicgenForCausalLM(hf_config).parameters())
    assert ours == theirs
    expected_dims = {"musicgen_small": (1024, 24, 16), "musicgen_medium": (1536, 48, 24), "musicgen_large": (2048, 48, 32)}
    assert (model_config.dim, model_config.num_layers, model_config.num_heads) == expected_dims[preset]


def test_tiny_preset_builds():
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        config = LMConfig(**compose(config_name=None, overrides=["+lm=tiny"]).lm.model)
    parameters = sum(p.numel() for p in LMModel(config).parameters())
    # embeddings 4*1025*128 + 4 layers * (3 attention-ish 128^2 blocks: 4 self + 4 cross + 2*128*512 MLP + 3 norms)
    # + final norm + heads 4*1024*128
    per_layer = 4 * 128 * 128 + 4 * 128 * 128 + 2 * 128 * 512 + 3 * 2 * 128
    assert parameters == 4 * 1025 * 128 + 4 * per_layer + 2 * 128 + 4 * 1024 * 128
