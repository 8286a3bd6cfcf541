import pytest
import torch
from torch._dynamo.utils import counters

from conditioners.tensors import ConditionTensors
from lm.backends.compiled import compile_decoding, is_compiled
from lm.backends.config import DecodeBackendConfig, with_backend
from lm.backends.quantize import quantize_int8
from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

K, CARD, DIM, STEPS = 4, 64, 64, 12


def decode_all(model: LMModel, sequence: torch.Tensor, conditions: ConditionTensors) -> torch.Tensor:
    """A 3-step prefill, then one step per call -> logits [B, K, S, card]."""
    with torch.inference_mode():
        state = model.start_decoding(sequence.shape[0], capacity=sequence.shape[2], conditions=conditions)
        chunks = [model.decode(sequence[:, :, :3], state)]
        chunks += [model.decode(sequence[:, :, step:step + 1], state) for step in range(3, sequence.shape[2])]
    return torch.cat(chunks, dim=2)


@pytest.mark.parametrize("positional", ["sin", "rope"])
def test_compiled_decoding_equals_eager_and_compiles_once_per_shape(positional):
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=128,
                             positional=positional)).eval()
    # A padded memory and a fully masked row (the CFG null condition) exercise the masked cross-attention.
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM),
                                  cross_mask=torch.arange(5)[None] < torch.tensor([[3], [0]]),
                                  add=torch.randn(2, 1, DIM))
    sequence = DelayPattern(K).get_pattern(STEPS).build(torch.randint(0, CARD, (2, K, STEPS)), special_token=CARD)
    compiled = compile_decoding(model)
    torch._dynamo.reset()
    counters.clear()
    eager = decode_all(model, sequence, conditions)
    first = decode_all(compiled, sequence, conditions)
    graphs = counters["stats"]["unique_graphs"]
    second = decode_all(compiled, sequence, conditions)  # new caches, same shapes: no new graph
    torch.testing.assert_close(first, eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(second, eager, atol=1e-4, rtol=0)
    # One graph for the first one-step call's cache length, one with the length symbolic, one for the last step
    # (where the filled prefix is the whole buffer, a contiguous tensor); none per step.
    assert graphs == 3 and counters["stats"]["unique_graphs"] == graphs
    assert not is_compiled(model), "the caller's model is not compiled"


def test_compiled_fp16_weights_stay_within_fp16_rounding_of_fp32():
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=128)).eval()
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM),
                                  cross_mask=torch.arange(5)[None] < torch.tensor([[3], [0]]))
    sequence = DelayPattern(K).get_pattern(STEPS).build(torch.randint(0, CARD, (2, K, STEPS)), special_token=CARD)
    torch._dynamo.reset()
    counters.clear()
    eager = decode_all(model, sequence, conditions)
    half = decode_all(compile_decoding(model, weights="fp16"), sequence, conditions)
    error = (half - eager).abs().max().item()
    # fp16 keeps 11 significant bits: the steps differ from fp32 by rounding (not 0), and by no more than that.
    assert 1e-5 < error < 1e-2 * eager.abs().max().item(), error
    assert counters["stats"]["unique_graphs"] == 3, "the one-step calls ran the compiled graph"


def test_compile_is_refused_for_non_fp32_and_with_int8_weights():
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=1, ffn_dim=128))
    with pytest.raises(ValueError, match="fp32"):
        compile_decoding(model.to(torch.bfloat16))
    with pytest.raises(ValueError, match="compile"):
        DecodeBackendConfig(weights="int8", compile=True)
    with pytest.raises(ValueError, match="compile=True"):
        DecodeBackendConfig(weights="fp16")
    with pytest.raises(ValueError, match="weights"):
        compile_decoding(model, weights="int8")
    with pytest.raises(ValueError, match="compile_decoding"):
        quantize_int8(compile_decoding(model.float()))


def test_compiled_copies_keep_their_own_frozen_weights():
    """The compiled graph holds the weights as constants: a second model's copy must not reuse the first one's."""
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM), cross_mask=torch.ones(2, 5, dtype=torch.bool))
    sequence = DelayPattern(K).get_pattern(STEPS).build(torch.randint(0, CARD, (2, K, STEPS)), special_token=CARD)
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=1, ffn_dim=128)).eval()
        torch.testing.assert_close(decode_all(compile_decoding(model), sequence, conditions),
                                   decode_all(model, sequence, conditions), atol=1e-4, rtol=0)


def test_each_compiled_copy_compiles_its_own_graphs():
    """Dynamo caps the graphs per code object (8 by default, 3 here): copies sharing one code object of `step`
    would send the second copy back to eager once the first holds 3 graphs."""
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM), cross_mask=torch.ones(2, 5, dtype=torch.bool))
    sequence = DelayPattern(K).get_pattern(STEPS).build(torch.randint(0, CARD, (2, K, STEPS)), special_token=CARD)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=1, ffn_dim=128)).eval()
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=3):
        for _ in range(2):
            counters.clear()
            decode_all(compile_decoding(model), sequence, conditions)
            assert counters["stats"]["unique_graphs"] >= 2, "this copy's one-step calls ran compiled graphs"


def test_compiled_generation_samples_the_same_tokens_as_eager():
    """Through CFG, an audio prompt (prefilled eagerly) and long-form windows of two capacities."""
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=128)).eval()
    conditions = ConditionTensors(cross=torch.randn(2, 5, DIM),
                                  cross_mask=torch.arange(5)[None] < torch.tensor([[3], [5]]))
    prompt = torch.randint(0, CARD, (2, K, 3))
    codes = {}
    torch._dynamo.reset()
    counters.clear()
    for compile in (False, True):
        config = GenerationConfig(top_k=8, cfg_coef=3.0, context_frames=10, extend_stride_frames=6)
        generator = LMGenerator(with_backend(model, DecodeBackendConfig(compile=compile)), DelayPattern(K), config)
        codes[compile] = generator.generate(20, conditions=conditions, prompt=prompt,
                                            generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes[True], codes[False])
    assert torch.equal(codes[True][:, :, :3], prompt)
    # The compiled step did run, and windows of another capacity did not compile a graph per step (3 seen).
    assert 1 <= counters["stats"]["unique_graphs"] <= 4
