"""Continuous batching (lm/row_batch.py): every row's tokens equal LMGenerator's for the same generation alone,
whatever joins or leaves the batch around it and whatever its neighbours' lengths and sampling parameters."""
import pytest
import torch

from conditioners.tensors import ConditionTensors
from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern
from lm.row_batch import RowBatch
from lm.sampling import Sampling

K, CARD, DIM = 4, 16, 32


def tiny_model(positional: str) -> LMModel:
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=64,
                             positional=positional)).eval()
    with torch.no_grad():
        model.heads.weight.mul_(4)  # peakier than uniform, so that sampling parameters and guidance matter
    return model


def condition(length: int, seed: int, real: int | None = None) -> ConditionTensors:
    """A caption's memory [1, length, D] whose first `real` positions (all by default) are real, the rest padding."""
    memory = torch.randn(1, length, DIM, generator=torch.Generator().manual_seed(seed))
    return ConditionTensors(cross=memory, cross_mask=torch.arange(length)[None] < (real or length))


def negative_condition(caption: int, negative: int | None, seed: int) -> ConditionTensors | None:
    """A negative caption of `negative` positions, padded to the caption's length as the conditioner pads a batch."""
    return None if negative is None else condition(caption, seed + 100, real=negative)


# (frames, caption length, seed, sampling, cfg_coef, negative caption length or None, step it arrives at)
REQUESTS = [
    (12, 3, 1, Sampling(1.0, 8, 0.0), 3.0, None, 0),
    (5, 6, 2, Sampling(0.7, 0, 0.9), 1.0, None, 0),
    (9, 5, 3, Sampling(1.0, 8, 0.0), 3.0, 2, 0),
    (14, 5, 4, Sampling(1.3, 4, 0.5), 2.0, None, 3),  # waits for a row: max_rows is 3
    (3, 1, 5, Sampling(0.0, 0, 0.0), 5.0, None, 4),
    (7, 4, 6, Sampling(1.0, 8, 0.0), 3.0, 2, 4),
]


def solo(model: LMModel, frames: int, caption: int, seed: int, sampling: Sampling, cfg_coef: float,
         negative: int | None) -> torch.Tensor:
    """The same generation alone, on the reference path: codes [1, K, frames]."""
    generator = LMGenerator(model, DelayPattern(K), GenerationConfig(*sampling, cfg_coef=cfg_coef))
    return generator.generate(frames, conditions=condition(caption, seed),
                              negative=negative_condition(caption, negative, seed),
                              generator=[torch.Generator().manual_seed(seed)])


@pytest.mark.parametrize("positional", ["sin", "rope"])
def test_rows_joining_and_leaving_get_their_solo_tokens(positional):
    model = tiny_model(positional)
    batch = RowBatch(model, DelayPattern(K), max_rows=3)
    waiting, rows, step = list(REQUESTS), {}, 0
    while waiting or batch.rows:
        while waiting and waiting[0][-1] <= step and len(batch.rows) < batch.max_rows:
            frames, caption, seed, sampling, cfg_coef, negative, _ = request = waiting.pop(0)
            rows[request] = batch.add(frames, condition(caption, seed), negative_condition(caption, negative, seed),
                                      sampling, cfg_coef, torch.Generator().manual_seed(seed))
        batch.step()
        for row in [row for row in batch.rows if row.done]:
            batch.remove(row)
        step += 1
    assert {row.slot for row in rows.values()} == {0, 1, 2}  # rows reused the slots of the ones that left
    for request, row in rows.items():
        assert row.final == request[0]
        assert torch.equal(row.codes, solo(model, *request[:-1])), request
    assert len({tuple(row.codes[0, 0, :3].tolist()) for row in rows.values()}) > 3  # not all the same tokens


def test_a_removed_row_leaves_the_others_unchanged():
    model = tiny_model("sin")
    batch = RowBatch(model, DelayPattern(K), max_rows=2)
    kept = batch.add(10, condition(3, 1), None, Sampling(1.0, 8, 0.0), 3.0, torch.Generator().manual_seed(1))
    cancelled = batch.add(10, condition(5, 2), None, Sampling(1.0, 8, 0.0), 3.0, torch.Generator().manual_seed(2))
    for _ in range(4):
        batch.step()
    batch.remove(cancelled)
    while not kept.done:
        batch.step()
    assert not cancelled.done and batch.rows == [kept]
    assert torch.equal(kept.codes, solo(model, 10, 3, 1, Sampling(1.0, 8, 0.0), 3.0, None))


def test_refuses_a_full_batch_and_prepended_conditions():
    model = tiny_model("sin")
    batch = RowBatch(model, DelayPattern(K), max_rows=1)
    batch.add(4, condition(3, 1), None, Sampling(1.0, 8, 0.0), 3.0, torch.Generator())
    with pytest.raises(ValueError, match="max_rows=1"):
        batch.add(4, condition(3, 1), None, Sampling(1.0, 8, 0.0), 3.0, torch.Generator())
    batch = RowBatch(model, DelayPattern(K), max_rows=1)
    prepended = ConditionTensors(prepend=torch.zeros(1, 2, DIM))
    with pytest.raises(ValueError, match="cross-attention only"):
        batch.add(4, prepended, None, Sampling(1.0, 8, 0.0), 3.0, torch.Generator())
