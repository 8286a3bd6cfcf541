import pytest
import torch

from lm.patterns import (DelayPattern, MusicLMPattern, ParallelPattern, PatternConfig, UnrolledPattern, VallePattern,
                         make_pattern)

SPECIAL = 99


def providers(K: int):
    """Every pattern kind, with its options, for K codebooks."""
    yield DelayPattern(K)
    yield DelayPattern(K, delays=[2 * q for q in range(K)])
    yield ParallelPattern(K)
    yield UnrolledPattern(K)
    yield UnrolledPattern(K, flattening=[min(q, 1) for q in range(K)], delays=[min(q, 1) * 2 for q in range(K)])
    if K >= 2:
        yield VallePattern(K)
        yield VallePattern(K, delays=list(range(K - 1)))
    yield MusicLMPattern(K, group_by=1 if K == 1 else 2)


def all_cases():
    return [(K, provider) for K in (1, 2, 4, 8) for provider in providers(K)]


def test_delay_layout_matches_musicgen_drawing():
    codes = torch.tensor([[[10, 11, 12, 13], [20, 21, 22, 23], [30, 31, 32, 33]]])
    sequence = DelayPattern(3, delays=[0, 1, 2]).get_pattern(4).build(codes, special_token=SPECIAL)
    S = SPECIAL
    assert sequence[0].tolist() == [[S, 10, 11, 12, 13, S, S], [S, S, 20, 21, 22, 23, S], [S, S, S, 30, 31, 32, 33]]


def test_pattern_lengths():
    assert ParallelPattern(4).get_pattern(10).num_steps == 11
    assert DelayPattern(4).get_pattern(10).num_steps == 14
    assert UnrolledPattern(4).get_pattern(10).num_steps == 41
    assert VallePattern(4).get_pattern(10).num_steps == 21
    assert MusicLMPattern(4, group_by=2).get_pattern(10).num_steps == 41


@pytest.mark.parametrize("K,provider", all_cases(), ids=lambda value: getattr(value, "__class__").__name__)
def test_round_trip_every_pattern(K, provider):
    T = 7
    codes = torch.randint(0, 50, (3, K, T))
    pattern = provider.get_pattern(T)
    sequence = pattern.build(codes, special_token=SPECIAL)  # [B, K, S]
    assert (sequence[:, :, 0] == SPECIAL).all(), "step 0 holds only the special token"
    assert (sequence != SPECIAL).sum() == codes.numel(), "every code is placed exactly once"
    restored, valid = pattern.revert(sequence, special_token=SPECIAL)
    assert valid.all()
    assert torch.equal(restored, codes)


@pytest.mark.parametrize("K,provider", all_cases(), ids=lambda value: getattr(value, "__class__").__name__)
def test_revert_logits_reads_the_previous_step(K, provider):
    """Logits at step s that one-hot the token of step s + 1 must revert to logits whose argmax is the codes."""
    T, card = 5, 60
    codes = torch.randint(0, 50, (2, K, T))
    pattern = provider.get_pattern(T)
    sequence = pattern.build(codes, special_token=SPECIAL)
    next_tokens = sequence[:, :, 1:].clamp(max=card - 1)  # [B, K, S - 1]
    logits = torch.nn.functional.one_hot(next_tokens, card).float()  # logits at steps 0 .. S - 2
    reverted, valid = pattern.revert_logits(logits)
    assert valid.all()
    assert torch.equal(reverted.argmax(dim=-1), codes)


def test_partial_revert_marks_incomplete_frames():
    codes = torch.arange(12).view(1, 3, 4)
    pattern = DelayPattern(3).get_pattern(4)
    sequence = pattern.build(codes, special_token=SPECIAL)
    restored, valid = pattern.revert(sequence[:, :, :4], special_token=SPECIAL)  # steps 0..3
    assert valid.tolist() == [[True, True, True, False], [True, True, False, False], [True, False, False, False]]
    assert torch.equal(restored[0][valid], codes[0][valid])
    assert (restored[0][~valid] == SPECIAL).all()


def test_prompt_steps_of_delay_pattern():
    pattern = DelayPattern(4).get_pattern(10)
    assert pattern.prompt_steps(0) == 1  # only the special step is known
    assert pattern.prompt_steps(3) == 4  # steps 1..3 hold codebook 0 of frames 0..2 and earlier frames of the others
    assert pattern.prompt_steps(10) == pattern.num_steps


def test_index_tensors_are_cached_per_length_and_device():
    provider = DelayPattern(4)
    assert provider.get_pattern(8) is provider.get_pattern(8)
    assert provider.get_pattern(8) is not provider.get_pattern(9)


@pytest.mark.parametrize("build, name", [
    (lambda: DelayPattern(3, delays=[0, 2, 1]), "delays"),
    (lambda: DelayPattern(3, delays=[0, 1]), "delays"),
    (lambda: UnrolledPattern(3, flattening=[0, 1, 1], delays=[0, 1, 2]), "delays"),
    (lambda: MusicLMPattern(3, group_by=2), "group_by"),
    (lambda: VallePattern(1), "num_codebooks"),
    (lambda: make_pattern(PatternConfig(kind="zigzag"), num_codebooks=4), "kind"),
    (lambda: make_pattern(PatternConfig(kind="parallel", delays=[0, 0, 0, 0]), num_codebooks=4), "delays"),
    (lambda: DelayPattern(2).get_pattern(0), "timesteps"),
])
def test_invalid_pattern_options_are_refused_by_name(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_make_pattern_from_config():
    provider = make_pattern(PatternConfig(kind="delay", delays=[0, 1, 2, 3]), num_codebooks=4)
    assert isinstance(provider, DelayPattern) and provider.delays == [0, 1, 2, 3]
