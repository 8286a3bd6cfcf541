import pytest
import torch
from torch import nn

from conditioners.text import TextConditioner


def _conditioner(
    path: str, pooling: str = "tokens", cache_size: int = 0, output_dim: int = 16, dtype: str = "float32"
) -> TextConditioner:
    return TextConditioner(
        encoder=path, output_dim=output_dim, pooling=pooling, max_length=32, dtype=dtype, cache_size=cache_size
    )


SHORT = "a calm piano melody"
LONG = "an upbeat electronic dance track with a driving beat and soft strings"


def test_padding_never_changes_the_real_positions(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir)
    alone = conditioner([SHORT])
    batched = conditioner([SHORT, LONG])
    real = alone.embeddings.shape[1]
    assert batched.embeddings.shape[1] > real
    torch.testing.assert_close(batched.embeddings[0, :real], alone.embeddings[0], atol=1e-5, rtol=1e-5)
    assert batched.embeddings[0, real:].abs().sum() == 0


def test_mask_marks_exactly_the_padding(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir)
    texts = [SHORT, LONG, "blues"]
    counts = [len(conditioner.tokenizer(text)["input_ids"]) for text in texts]
    mask = conditioner(texts).mask
    expected = torch.arange(max(counts)).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)
    assert torch.equal(mask, expected)


def test_missing_or_blank_text_is_a_fully_masked_zero_row(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir)
    condition = conditioner([None, "   ", SHORT])
    assert not condition.mask[:2].any() and condition.mask[2].any()
    assert condition.embeddings[:2].abs().sum() == 0
    all_null = conditioner([None, ""])
    assert all_null.mask.shape == (2, 1) and not all_null.mask.any()


def test_frozen_encoder_gets_no_gradient_while_the_projection_does(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir)
    assert type(conditioner.encoder).__name__ == "T5EncoderModel"  # encoder only, no decoder stack
    conditioner([SHORT, LONG]).embeddings.square().sum().backward()
    assert conditioner.projection.weight.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in conditioner.encoder.parameters())
    # The frozen weights stay out of checkpoints and optimizers: only the projection is a parameter.
    assert set(conditioner.state_dict()) == {"projection.weight", "projection.bias"}


def test_encoder_stays_in_eval_mode_when_the_parent_trains(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir)  # the tiny T5 has dropout 0.5: train mode would change every call
    parent = nn.Sequential(conditioner).train()
    assert conditioner.training and not any(module.training for module in conditioner.encoder.modules())
    torch.testing.assert_close(conditioner([LONG]).embeddings, conditioner([LONG]).embeddings, atol=0, rtol=0)
    assert parent.training


def test_cache_returns_identical_tensors_and_skips_the_encoder(tiny_t5_dir, monkeypatch):
    cached, uncached = _conditioner(tiny_t5_dir, cache_size=8), _conditioner(tiny_t5_dir)
    uncached.load_state_dict(cached.state_dict())
    calls = []
    forward = cached.encoder.forward
    monkeypatch.setattr(cached.encoder, "forward", lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs))
    first = cached([SHORT, LONG, SHORT])
    assert len(calls) == 1
    again = cached([LONG, SHORT])
    assert len(calls) == 1
    assert torch.equal(again.embeddings, first.embeddings[[1, 0]]) and torch.equal(again.mask, first.mask[[1, 0]])
    torch.testing.assert_close(first.embeddings, uncached([SHORT, LONG, SHORT]).embeddings, atol=1e-5, rtol=1e-5)
    cached(["blues"])
    assert len(calls) == 2


def test_cache_evicts_the_least_recently_used_text(tiny_t5_dir):
    conditioner = _conditioner(tiny_t5_dir, cache_size=2)
    conditioner([SHORT])
    conditioner([LONG])
    conditioner([SHORT])  # SHORT becomes most recent
    conditioner(["blues"])  # evicts LONG
    assert list(conditioner.cache) == [SHORT, "blues"]


def test_mean_pooling_is_the_masked_mean_of_the_token_memory(tiny_t5_dir):
    tokens, mean = _conditioner(tiny_t5_dir), _conditioner(tiny_t5_dir, pooling="mean")
    mean.load_state_dict(tokens.state_dict())
    texts = [SHORT, LONG, None]
    per_token, pooled = tokens(texts), mean(texts)
    weights = per_token.mask.unsqueeze(-1).float()
    # The projection is affine, so projecting the mean equals the mean of the projected tokens.
    expected = (per_token.embeddings * weights).sum(1) / weights.sum(1).clamp(min=1)
    torch.testing.assert_close(pooled.embeddings[:2, 0], expected[:2], atol=1e-5, rtol=1e-5)
    assert pooled.mask.tolist() == [[True], [True], [False]] and pooled.embeddings[2].abs().sum() == 0


def test_half_precision_encoder_stays_close_to_float32_and_returns_float32(tiny_t5_dir):
    full, half = _conditioner(tiny_t5_dir), _conditioner(tiny_t5_dir, dtype="bfloat16")
    half.load_state_dict(full.state_dict())
    assert next(half.encoder.parameters()).dtype == torch.bfloat16
    reference, reduced = full([LONG]).embeddings, half([LONG]).embeddings
    assert reduced.dtype == torch.float32
    assert (reduced - reference).abs().max() < 0.05 * reference.abs().max()
    assert not torch.equal(reduced, reference)


def test_missing_model_names_the_config_key_and_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder:"):
        _conditioner(str(tmp_path / "no-such-t5"))
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        _conditioner("codeclm-test/definitely-not-cached")


def test_invalid_pooling_is_refused(tiny_t5_dir):
    with pytest.raises(ValueError, match="pooling"):
        _conditioner(tiny_t5_dir, pooling="max")
