import pytest
import torch

from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern
from lm.sampling import Sampling, guide, sample, sample_rows


def test_guidance_formula():
    cond, uncond = torch.randn(3, 4, 10), torch.randn(3, 4, 10)
    torch.testing.assert_close(guide(cond, uncond, cfg_coef=3.0), uncond + 3.0 * (cond - uncond))
    torch.testing.assert_close(guide(cond, uncond, cfg_coef=1.0), cond)


def test_top_k_never_samples_outside_the_k_best():
    logits = torch.randn(4000, 50)
    tokens = sample(logits, temperature=1.5, top_k=5, top_p=0.0, generator=torch.Generator().manual_seed(1))
    allowed = logits.topk(5, dim=-1).indices
    assert (allowed == tokens[:, None]).any(dim=-1).all()
    assert len(tokens.unique()) > 5, "it samples, not argmax"


def test_top_p_never_samples_outside_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04])
    logits = probs.log().repeat(4000, 1)
    tokens = sample(logits, temperature=1.0, top_k=0, top_p=0.75, generator=torch.Generator().manual_seed(2))
    assert set(tokens.tolist()) == {0, 1}, "0.5 alone is below 0.75; 0.5 + 0.3 reaches it"
    tokens = sample(logits, temperature=1.0, top_k=0, top_p=1e-6, generator=torch.Generator().manual_seed(2))
    assert (tokens == 0).all()


def test_exponential_race_matches_the_distribution():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    tokens = sample(probs.log().repeat(40000, 1), temperature=1.0, top_k=0, top_p=0.0,
                    generator=torch.Generator().manual_seed(3))
    frequencies = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(frequencies, probs, atol=0.01, rtol=0)


def test_top_k_samples_the_renormalized_k_best():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    tokens = sample(probs.log().repeat(40000, 1), temperature=1.0, top_k=2, top_p=0.0,
                    generator=torch.Generator().manual_seed(4))
    frequencies = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(frequencies, torch.tensor([0.0, 0.0, 3 / 7, 4 / 7]), atol=0.01, rtol=0)


def test_top_k_then_top_p_keeps_the_nucleus_of_the_k_best():
    logits = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]).log().repeat(4000, 1)
    tokens = sample(logits, temperature=1.0, top_k=3, top_p=0.6, generator=torch.Generator().manual_seed(5))
    assert set(tokens.tolist()) == {1, 3}, "k=3 keeps 0.4, 0.3, 0.15 (renormalized 0.47, 0.35); 0.47 + 0.35 reaches 0.6"
    tokens = sample(logits, temperature=1.0, top_k=3, top_p=0.99, generator=torch.Generator().manual_seed(5))
    assert set(tokens.tolist()) == {1, 3, 4}


def test_temperature_zero_is_greedy():
    logits = torch.randn(10, 4, 30)
    assert torch.equal(sample(logits, temperature=0.0, top_k=250, top_p=0.0), logits.argmax(dim=-1))


@pytest.mark.parametrize("options, name", [
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": -0.1}, "top_p"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_k": -1}, "top_k"),
    ({"cfg_coef": -0.5}, "cfg_coef"),
    ({"context_frames": 10, "extend_stride_frames": 10}, "extend_stride_frames"),
    ({"context_frames": 10}, "extend_stride_frames"),
    ({"extend_stride_frames": 5}, "extend_stride_frames"),
    ({"context_frames": 1, "extend_stride_frames": 1}, "context_frames"),
])
def test_invalid_generation_config_is_refused_by_name(options, name):
    with pytest.raises(ValueError, match=name):
        GenerationConfig(**options)


def test_invalid_generation_arguments_are_refused_by_name():
    model = LMModel(LMConfig(num_codebooks=2, card=8, dim=16, num_heads=2, num_layers=1, ffn_dim=32))
    with pytest.raises(ValueError, match="top_k"):
        LMGenerator(model, DelayPattern(2), GenerationConfig(top_k=9))
    with pytest.raises(ValueError, match="num_codebooks"):
        LMGenerator(model, DelayPattern(3), GenerationConfig(top_k=4))
    generator = LMGenerator(model, DelayPattern(2), GenerationConfig(top_k=4))
    with pytest.raises(ValueError, match="num_frames"):
        generator.generate(0, batch_size=1)
    with pytest.raises(ValueError, match="batch_size"):
        generator.generate(4, batch_size=2, prompt=torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="prompt"):
        generator.generate(4, prompt=torch.zeros(1, 2, 5, dtype=torch.long))


def test_sample_rows_gives_each_row_what_sample_gives_it_alone():
    logits = torch.randn(5, 4, 64, generator=torch.Generator().manual_seed(4)) * 3
    settings = [Sampling(1.0, 8, 0.0), Sampling(0.7, 0, 0.9), Sampling(1.0, 8, 0.0), Sampling(0.0, 0, 0.0),
                Sampling(1.3, 4, 0.5)]
    tokens = sample_rows(logits, settings, [torch.Generator().manual_seed(seed) for seed in range(5)])
    for row, setting in enumerate(settings):
        alone = sample(logits[row:row + 1], *setting, generator=[torch.Generator().manual_seed(row)])
        assert torch.equal(tokens[row:row + 1], alone), setting
    shared = sample(logits, *settings[0], generator=[torch.Generator().manual_seed(seed) for seed in range(5)])
    assert not torch.equal(tokens, shared)  # the settings matter


def test_per_row_guidance_scale_equals_each_scale_alone():
    cond, uncond = torch.randn(3, 4, 10), torch.randn(3, 4, 10)
    scales = [3.0, 1.5, 2.7]
    guided = guide(cond, uncond, torch.tensor(scales).view(3, 1, 1))
    for row, scale in enumerate(scales):
        assert torch.equal(guided[row], guide(cond, uncond, scale)[row])
