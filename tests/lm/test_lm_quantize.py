import pytest
import torch
from torch import nn

from conditioners.tensors import ConditionTensors
from lm.backends.config import DecodeBackendConfig, with_backend
from lm.backends.quantize import Int8Linear, quantize_int8
from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

K, CARD, DIM, STEPS = 4, 64, 64, 16
# Measured on seeds 0-4: int8 vs fp32 max |error| 0.035-0.041 for a logit std of 0.57 (7 % of it), top-1 agreement
# 0.97-0.98 (a random model has many near ties); the bounds leave a margin over that.
MAX_ERROR_OF_STD, MIN_TOP1_AGREEMENT = 0.1, 0.95


@pytest.fixture
def model() -> LMModel:
    config = LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=128)
    return LMModel(config).eval()


@pytest.fixture
def condition() -> ConditionTensors:
    return ConditionTensors(cross=torch.randn(2, 5, DIM), cross_mask=torch.arange(5)[None] < torch.tensor([[3], [5]]))


def assert_close_to_fp32(logits: torch.Tensor, reference: torch.Tensor) -> None:
    error = (logits - reference).abs().max()
    assert error < MAX_ERROR_OF_STD * reference.std(), f"max |int8 - fp32| {error:.4f}, logit std {reference.std():.4f}"
    agreement = (logits.argmax(dim=-1) == reference.argmax(dim=-1)).float().mean()
    assert agreement >= MIN_TOP1_AGREEMENT, f"top-1 agreement {agreement:.3f}"


def test_every_linear_is_quantized_and_the_original_is_untouched(model):
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantized = quantize_int8(model)
    assert not any(isinstance(module, nn.Linear) for module in quantized.modules())
    linears = sum(isinstance(module, nn.Linear) for module in model.modules())
    assert linears == 2 * 7 + 1  # per layer: qkv, out, query, key_value, out, 2 MLP; then the heads
    assert sum(isinstance(module, Int8Linear) for module in quantized.modules()) == linears
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_int8_logits_are_close_to_fp32(model, condition):
    sequence = torch.randint(0, CARD, (2, K, STEPS))
    with torch.inference_mode():
        reference = model(sequence, condition)  # [B, K, S, card]
        logits = quantize_int8(model)(sequence, condition)
    assert_close_to_fp32(logits, reference)
    assert (logits - reference).abs().max() > 1e-4, "the weights were quantized"


def test_int8_cached_decoding_matches_the_full_forward(model, condition):
    """Activations are quantized per call over the whole tensor, so a step decoded alone and the same step inside a
    full forward differ by quantization noise, not more: both stay within the fp32 bound."""
    sequence = torch.randint(0, CARD, (2, K, STEPS))
    quantized = quantize_int8(model)
    with torch.inference_mode():
        reference = model(sequence, condition)
        full = quantized(sequence, condition)
        state = quantized.start_decoding(2, capacity=STEPS, conditions=condition)
        chunks = [quantized.decode(sequence[:, :, :3], state)]  # a prefill, then one step at a time
        chunks += [quantized.decode(sequence[:, :, step:step + 1], state) for step in range(3, STEPS)]
    cached = torch.cat(chunks, dim=2)
    assert_close_to_fp32(cached, reference)
    assert (cached - full).abs().max() < 2 * MAX_ERROR_OF_STD * reference.std()


def test_int8_generation_is_opt_in_and_leaves_the_callers_model_fp32(model, condition):
    fp32 = LMGenerator(model, DelayPattern(K), GenerationConfig(top_k=8))
    int8 = LMGenerator(with_backend(model, DecodeBackendConfig(weights="int8")), DelayPattern(K),
                       GenerationConfig(top_k=8))
    assert fp32.model is model and isinstance(model.heads, nn.Linear)
    assert isinstance(int8.model.heads, Int8Linear)
    codes = int8.generate(10, conditions=condition, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, K, 10) and codes.min() >= 0 and codes.max() < CARD


def test_int8_is_refused_where_its_kernels_do_not_run(model):
    with pytest.raises(ValueError, match="fp32 model, got torch.bfloat16"):
        quantize_int8(LMModel(model.config).to(torch.bfloat16))
    with pytest.raises(ValueError, match="CPU only.*meta"):
        quantize_int8(LMModel(model.config).to("meta"))
    engine = torch.backends.quantized.engine
    if "qnnpack" not in torch.backends.quantized.supported_engines:
        pytest.skip("this torch build has no qnnpack engine to switch to")
    try:
        torch.backends.quantized.engine = "qnnpack"
        with pytest.raises(ValueError, match="quantized.engine.*'qnnpack'"):
            with_backend(model, DecodeBackendConfig(weights="int8"))
    finally:
        torch.backends.quantized.engine = engine
