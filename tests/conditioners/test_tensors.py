import pytest
import torch

from conditioners.tensors import ConditionTensors


def _conditions(batch: int = 3) -> ConditionTensors:
    cross = torch.randn(batch, 5, 8)
    cross_mask = torch.ones(batch, 5, dtype=torch.bool)
    cross_mask[0, 3:] = False
    return ConditionTensors(cross=cross, cross_mask=cross_mask, add=torch.randn(batch, 1, 8))


def test_null_masks_every_memory_position_and_zeros_embeddings():
    null = _conditions().null()
    assert not null.cross_mask.any()
    assert null.cross.abs().sum() == 0 and null.add.abs().sum() == 0


def test_where_replaces_only_dropped_examples_by_the_null_condition():
    conditions = _conditions()
    keep = torch.tensor([True, False, True])
    mixed = conditions.where(keep)
    null = conditions.null()
    torch.testing.assert_close(mixed.cross[1], null.cross[1])
    torch.testing.assert_close(mixed.cross_mask[1], null.cross_mask[1])
    torch.testing.assert_close(mixed.cross[[0, 2]], conditions.cross[[0, 2]])
    torch.testing.assert_close(mixed.cross_mask[0], conditions.cross_mask[0])


def test_cat_stacks_conditional_and_null_batches():
    conditions = _conditions(2)
    both = conditions.cat(conditions.null())
    assert both.cross.shape[0] == 4
    assert both.cross_mask[:2].any() and not both.cross_mask[2:].any()


def test_mask_without_memory_is_refused():
    with pytest.raises(ValueError, match="together"):
        ConditionTensors(cross=torch.zeros(1, 2, 3))


def test_a_prepend_null_is_the_null_prepend_in_null_where_and_cat():
    prepend, prepend_null = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    conditions = ConditionTensors(prepend=prepend, prepend_null=prepend_null)
    torch.testing.assert_close(conditions.null().prepend, prepend_null)
    mixed = conditions.where(torch.tensor([False, True]))
    torch.testing.assert_close(mixed.prepend, torch.stack([prepend_null[0], prepend[1]]))
    both = conditions.cat(conditions.null())
    torch.testing.assert_close(both.prepend, torch.cat([prepend, prepend_null]))
    torch.testing.assert_close(both.null().prepend, torch.cat([prepend_null, prepend_null]))
    with pytest.raises(ValueError, match="prepend_null must be shaped as prepend"):
        ConditionTensors(prepend=prepend, prepend_null=prepend_null[:, :3])
