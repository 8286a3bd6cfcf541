import pytest
import torch

from lm.multirate import MultiRatePattern
from lm.patterns import UnrolledPattern

SPECIAL = -1
STRIDES = [[4, 2, 1], [8, 4, 2, 1], [2, 1], [1], [1, 1, 1, 1], [4, 4, 1]]


def random_codes(strides: list[int], batch: int, frames: int) -> list[torch.Tensor]:
    return [torch.randint(0, 1000, (batch, frames * (strides[0] // stride))) for stride in strides]


def orpheus_stream(codes: list[torch.Tensor]) -> list[int]:
    """Orpheus / VyvoTTS interleaving of SNAC 24 kHz codes (one item), written out as their encoders do."""
    coarse, middle, fine = (level[0] for level in codes)
    stream = []
    for i in range(coarse.numel()):
        stream += [coarse[i], middle[2 * i], fine[4 * i], fine[4 * i + 1], middle[2 * i + 1], fine[4 * i + 2],
                   fine[4 * i + 3]]
    return [int(code) for code in stream]


def test_depth_first_order_is_orpheus_order():
    codes = [torch.tensor([[0, 1]]), torch.tensor([[10, 11, 12, 13]]), torch.tensor([[20, 21, 22, 23, 24, 25, 26, 27]])]
    stream = MultiRatePattern([4, 2, 1]).flatten(codes)
    assert stream[0].tolist() == [0, 10, 20, 21, 11, 22, 23, 1, 12, 24, 25, 13, 26, 27]
    random = random_codes([4, 2, 1], batch=1, frames=6)
    assert MultiRatePattern([4, 2, 1]).flatten(random)[0].tolist() == orpheus_stream(random)


def test_level_major_and_four_level_orders():
    codes = [torch.tensor([[0]]), torch.tensor([[10, 11]]), torch.tensor([[20, 21, 22, 23]])]
    assert MultiRatePattern([4, 2, 1], order="level_major").flatten(codes)[0].tolist() == [0, 10, 11, 20, 21, 22, 23]
    codes.append(torch.tensor([[30, 31, 32, 33, 34, 35, 36, 37]]))
    depth_first = MultiRatePattern([8, 4, 2, 1]).flatten(codes)[0].tolist()
    assert depth_first == [0, 10, 20, 30, 31, 21, 32, 33, 11, 22, 34, 35, 23, 36, 37]


@pytest.mark.parametrize("order", ["depth_first", "level_major"])
@pytest.mark.parametrize("strides", STRIDES, ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_round_trip(strides, order, batch):
    pattern = MultiRatePattern(strides, order=order)
    codes = random_codes(strides, batch, frames=5)
    stream = pattern.flatten(codes)  # [B, T_c * F]
    assert stream.shape == (batch, 5 * pattern.frame_size)
    assert sorted(stream[0].tolist()) == sorted(torch.cat([level[0] for level in codes]).tolist())
    restored = pattern.unflatten(stream, special_token=SPECIAL)
    assert restored.complete_frames == 5
    assert all(valid.all() for valid in restored.valid)
    assert all(torch.equal(back, level) for back, level in zip(restored.codes, codes))
    assert all(torch.equal(back, level) for back, level in zip(pattern.from_frames(pattern.to_frames(codes)), codes))


def test_single_rate_is_flattening():
    codes = random_codes([1], batch=2, frames=7)
    assert torch.equal(MultiRatePattern([1]).flatten(codes), codes[0])
    codes = random_codes([1, 1, 1, 1], batch=2, frames=7)
    expected = torch.stack(codes, dim=1).transpose(1, 2).flatten(1)  # [B, K, T] -> frame after frame
    assert torch.equal(MultiRatePattern([1, 1, 1, 1]).flatten(codes), expected)


@pytest.mark.parametrize("strides", STRIDES, ids=str)
def test_unrolled_pattern_over_frames_steps_through_the_stream(strides):
    """The MusicGen-style LM's view: slots as F codebooks at the coarse rate, unrolled, is the same stream, and a
    partial sequence reverts to the same valid codes as the partial stream."""
    pattern = MultiRatePattern(strides)
    codes = random_codes(strides, batch=2, frames=4)
    layout = UnrolledPattern(pattern.frame_size).get_pattern(4)
    sequence = layout.build(pattern.to_frames(codes), special_token=SPECIAL)  # [B, F, S]
    placed = sequence[:, :, 1:] != SPECIAL
    assert (placed.sum(dim=1) == 1).all(), "one token per step after the special step 0"
    assert torch.equal(sequence[:, :, 1:].amax(dim=1), pattern.flatten(codes))
    for steps in (1, 5, pattern.frame_size + 2, layout.num_steps):
        frames, valid = layout.revert(sequence[:, :, :steps], special_token=SPECIAL)
        partial = pattern.unflatten(pattern.flatten(codes)[:, : steps - 1], special_token=SPECIAL, num_frames=4)
        assert all(torch.equal(a, b) for a, b in zip(pattern.from_frames(frames), partial.codes))
        assert all(torch.equal(a, b) for a, b in zip(pattern.from_frames(valid), partial.valid))


def test_partial_stream_marks_missing_codes():
    codes = [torch.tensor([[0, 1]]), torch.tensor([[10, 11, 12, 13]]), torch.tensor([[20, 21, 22, 23, 24, 25, 26, 27]])]
    pattern = MultiRatePattern([4, 2, 1])
    partial = pattern.unflatten(pattern.flatten(codes)[:, :10], special_token=SPECIAL)  # frame 0 + c1, m2, f4
    assert partial.complete_frames == 1
    assert [valid.tolist() for valid in partial.valid] == [
        [True, True], [True, True, True, False], [True, True, True, True, True, False, False, False]]
    assert [level[0].tolist() for level in partial.codes] == [
        [0, 1], [10, 11, 12, SPECIAL], [20, 21, 22, 23, 24, SPECIAL, SPECIAL, SPECIAL]]


def test_level_and_slot_index():
    pattern = MultiRatePattern([4, 2, 1])
    assert pattern.level_index(9).tolist() == [0, 1, 2, 2, 1, 2, 2, 0, 1]
    assert pattern.slot_index(9).tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    codes = random_codes([4, 2, 1], batch=1, frames=3)
    stream, levels = pattern.flatten(codes)[0], pattern.level_index(21)
    # both orders keep the codes of one level in time order, so selecting a level's positions gives the level back
    assert all(torch.equal(stream[levels == q], codes[q][0]) for q in range(3))


@pytest.mark.parametrize("strides,message", [([], "non-empty"), ([2, 0], ">= 1"), ([3, 2, 1], "multiple"),
                                             ([1, 2], "multiple")])
def test_bad_strides_refused(strides, message):
    with pytest.raises(ValueError, match=f"strides.*{message}"):
        MultiRatePattern(strides)


def test_bad_order_and_lengths_refused():
    with pytest.raises(ValueError, match="order"):
        MultiRatePattern([2, 1], order="breadth_first")
    pattern = MultiRatePattern([4, 2, 1])
    with pytest.raises(ValueError, match="3 levels"):
        pattern.flatten([torch.zeros(1, 2, dtype=torch.long)] * 2)
    with pytest.raises(ValueError, match="lengths"):
        pattern.flatten([torch.zeros(1, 2), torch.zeros(1, 4), torch.zeros(1, 7)])
    with pytest.raises(ValueError, match="num_frames"):
        pattern.unflatten(torch.zeros(1, 15, dtype=torch.long), special_token=SPECIAL, num_frames=2)
