import pytest
import torch

from conditioners.tensors import ConditionTensors
from lm.generator import UNKNOWN, GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern, MusicLMPattern, UnrolledPattern, VallePattern

K, CARD, DIM = 4, 16, 32


@pytest.fixture
def model() -> LMModel:
    config = LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=64)
    return LMModel(config).eval()


def conditions(lengths: list[int], seed: int = 0) -> ConditionTensors:
    L = max(lengths)
    memory = torch.randn(len(lengths), L, DIM, generator=torch.Generator().manual_seed(seed))
    return ConditionTensors(cross=memory, cross_mask=torch.arange(L)[None, :] < torch.tensor(lengths)[:, None])


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def generator_for(model: LMModel, **options) -> LMGenerator:
    config = dict(temperature=1.0, top_k=8, top_p=0.0, cfg_coef=3.0) | options
    return LMGenerator(model, DelayPattern(K), GenerationConfig(**config))


@torch.inference_mode()
def naive_guided_greedy(model: LMModel, condition: ConditionTensors, num_frames: int, cfg_coef: float) -> torch.Tensor:
    """Reference decode: every step re-runs the whole prefix for both branches; no cache, no batching of branches."""
    pattern = DelayPattern(K).get_pattern(num_frames)
    B = condition.cross.shape[0]
    sequence = pattern.build(torch.full((B, K, num_frames), UNKNOWN), special_token=CARD)
    for step in range(1, pattern.num_steps):
        cond = model(sequence[:, :, :step], condition)[:, :, -1]
        uncond = model(sequence[:, :, :step], condition.null())[:, :, -1]
        tokens = (uncond + cfg_coef * (cond - uncond)).argmax(dim=-1)
        sequence[:, :, step] = torch.where(sequence[:, :, step] == UNKNOWN, tokens, sequence[:, :, step])
    return pattern.revert(sequence, special_token=CARD)[0]


@pytest.mark.parametrize("two_step_cfg", [False, True])
def test_cached_guided_decoding_equals_naive_recomputation(model, two_step_cfg):
    condition = conditions([3, 5])
    expected = naive_guided_greedy(model, condition, num_frames=8, cfg_coef=2.5)
    generated = generator_for(model, temperature=0.0, cfg_coef=2.5, two_step_cfg=two_step_cfg).generate(
        8, conditions=condition)
    assert torch.equal(generated, expected)


def test_two_step_cfg_samples_the_same_tokens(model):
    condition = conditions([3, 5])
    one_batch = generator_for(model).generate(10, conditions=condition, generator=seeded(5))
    two_step = generator_for(model, two_step_cfg=True).generate(10, conditions=condition, generator=seeded(5))
    assert torch.equal(one_batch, two_step)


def test_same_seed_same_tokens_other_seed_other_tokens(model):
    generator = generator_for(model)
    first = generator.generate(12, conditions=conditions([4]), generator=seeded(7))
    again = generator.generate(12, conditions=conditions([4]), generator=seeded(7))
    other = generator.generate(12, conditions=conditions([4]), generator=seeded(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert first.min() >= 0 and first.max() < CARD


def test_tokens_do_not_depend_on_the_other_prompts_in_the_batch(model):
    """The same prompt alone, or padded beside longer and shorter prompts, gives identical tokens."""
    alone = conditions([3], seed=1)
    others = conditions([7, 1], seed=2)
    L = 7
    padded = torch.cat([alone.cross, torch.randn(1, L - 3, DIM)], dim=1)  # garbage in the padding
    batch = ConditionTensors(cross=torch.cat([padded, others.cross]),
                             cross_mask=torch.cat([torch.arange(L)[None] < 3, others.cross_mask]))
    generator = generator_for(model, temperature=0.0)
    single = generator.generate(10, conditions=alone)
    batched = generator.generate(10, conditions=batch)
    assert torch.equal(batched[:1], single)


def test_changing_the_condition_changes_the_tokens(model):
    generator = generator_for(model)
    first = generator.generate(12, conditions=conditions([4], seed=1), generator=seeded(0))
    second = generator.generate(12, conditions=conditions([4], seed=2), generator=seeded(0))
    assert (first != second).float().mean() > 0.2


@pytest.mark.parametrize("provider", [DelayPattern(K), VallePattern(K), UnrolledPattern(K), MusicLMPattern(K)],
                         ids=lambda provider: type(provider).__name__)
def test_continuation_keeps_the_prompt_codes(model, provider):
    prompt = torch.randint(0, CARD, (2, K, 5))
    generator = LMGenerator(model, provider, GenerationConfig(top_k=8, cfg_coef=3.0))
    codes = generator.generate(9, conditions=conditions([2, 4]), prompt=prompt, generator=seeded(0))
    assert codes.shape == (2, K, 9)
    assert torch.equal(codes[:, :, :5], prompt)
    assert codes.min() >= 0 and codes.max() < CARD


def test_unconditional_generation_without_conditions(model):
    codes = generator_for(model).generate(6, batch_size=3, generator=seeded(0))
    assert codes.shape == (3, K, 6) and codes.min() >= 0 and codes.max() < CARD


def test_long_form_window_produces_the_requested_length(model):
    prompt = torch.randint(0, CARD, (1, K, 3))
    long_form = generator_for(model, context_frames=8, extend_stride_frames=5)
    assert long_form.windows(20) == [(0, 8), (5, 8), (10, 8), (15, 5)]
    progress = []
    codes = long_form.generate(20, conditions=conditions([3]), prompt=prompt, generator=seeded(3),
                               progress=lambda step, total: progress.append((step, total)))
    assert codes.shape == (1, K, 20) and codes.min() >= 0
    assert torch.equal(codes[:, :, :3], prompt)
    steps, totals = zip(*progress)
    assert list(steps) == list(range(1, totals[0] + 1)) and set(totals) == {totals[0]}
    # The first window is an ordinary generation of context_frames frames with the same noise.
    first_window = generator_for(model).generate(8, conditions=conditions([3]), prompt=prompt, generator=seeded(3))
    assert torch.equal(codes[:, :, :8], first_window)


def test_long_form_windows_continue_from_the_generated_frames(model):
    """Greedy windows: each window is the greedy continuation of the last kept frames of the previous one."""
    long_form = generator_for(model, temperature=0.0, context_frames=8, extend_stride_frames=4)
    codes = long_form.generate(12, conditions=conditions([3]))
    second = generator_for(model, temperature=0.0).generate(8, conditions=conditions([3]), prompt=codes[:, :, 4:8])
    assert torch.equal(codes[:, :, 4:12], second)


def test_context_longer_than_the_generation_is_one_window(model):
    single = generator_for(model).generate(10, conditions=conditions([3]), generator=seeded(4))
    windowed = generator_for(model, context_frames=50, extend_stride_frames=30).generate(
        10, conditions=conditions([3]), generator=seeded(4))
    assert torch.equal(single, windowed)
