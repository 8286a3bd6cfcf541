import pytest
import torch

from conditioners.condition import Condition
from conditioners.fuser import ConditionFuser

B, D, S = 2, 4, 6


def _condition(length: int, real: list[int]) -> Condition:
    mask = torch.arange(length).unsqueeze(0) < torch.tensor(real).unsqueeze(1)  # [B, L]
    return Condition(embeddings=torch.randn(B, length, D) * mask.unsqueeze(-1), mask=mask)


def test_cross_concatenates_memories_and_masks_in_route_order():
    text, genre = _condition(3, [3, 1]), _condition(2, [0, 2])
    fused = ConditionFuser(routes={"genre": "cross", "text": "cross"})({"text": text, "genre": genre}, seq_len=S)
    assert fused.cross.shape == (B, 5, D)
    torch.testing.assert_close(fused.cross, torch.cat([genre.embeddings, text.embeddings], dim=1))
    assert fused.cross_mask.tolist() == [[False, False, True, True, True], [True, True, True, False, False]]
    assert fused.prepend is None and fused.add is None


def test_prepend_concatenates_along_the_prepended_steps():
    melody, style = _condition(S, [S, S]), _condition(2, [2, 2])
    fused = ConditionFuser(routes={"melody": "prepend", "style": "prepend"})({"melody": melody, "style": style}, S)
    assert fused.prepend.shape == (B, S + 2, D) and fused.cross is None and fused.cross_mask is None
    torch.testing.assert_close(fused.prepend[:, :S], melody.embeddings)


def test_sum_adds_global_and_per_step_conditions():
    global_style, melody = _condition(1, [1, 0]), _condition(S, [S, S])
    fused = ConditionFuser(routes={"style": "sum", "melody": "sum"})({"style": global_style, "melody": melody}, S)
    assert fused.add.shape == (B, S, D)
    torch.testing.assert_close(fused.add, melody.embeddings + global_style.embeddings)
    torch.testing.assert_close(fused.add[1], melody.embeddings[1])  # the masked global row adds nothing
    only_global = ConditionFuser(routes={"style": "sum"})({"style": global_style}, seq_len=None)
    assert only_global.add.shape == (B, 1, D)


def test_sum_of_a_condition_with_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="'melody'"):
        ConditionFuser(routes={"melody": "sum"})({"melody": _condition(S - 1, [1, 1])}, seq_len=S)


def test_input_interpolate_resamples_linearly_to_the_sequence_length():
    ramp = torch.tensor([0.0, 1.0]).view(1, 2, 1).expand(B, 2, D)
    condition = Condition(embeddings=ramp, mask=torch.ones(B, 2, dtype=torch.bool))
    fused = ConditionFuser(routes={"curve": "input_interpolate"})({"curve": condition}, seq_len=4)
    torch.testing.assert_close(fused.add[0, :, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    same = _condition(S, [S, S])
    identity = ConditionFuser(routes={"x": "input_interpolate"})({"x": same}, seq_len=S)
    torch.testing.assert_close(identity.add, same.embeddings)


def test_unknown_modes_and_unrouted_conditions_are_refused():
    with pytest.raises(ValueError, match="'text'"):
        ConditionFuser(routes={"text": "concat"})
    with pytest.raises(ValueError, match="routes"):
        ConditionFuser(routes={"text": "cross"})({"genre": _condition(1, [1, 1])}, seq_len=S)


def test_no_conditions_fuse_to_empty_tensors():
    fused = ConditionFuser(routes={})({}, seq_len=S)
    assert fused.cross is None and fused.prepend is None and fused.add is None


def test_a_condition_with_null_embeddings_gives_the_null_prepend_and_cannot_be_added():
    melody, text = _condition(S, [S, S]), _condition(3, [3, 1])
    melody.null = torch.randn(B, S, D)
    fused = ConditionFuser(routes={"melody": "prepend", "text": "prepend"})({"melody": melody, "text": text}, S)
    torch.testing.assert_close(fused.prepend_null, torch.cat([melody.null, torch.zeros(B, 3, D)], dim=1))
    plain = ConditionFuser(routes={"text": "prepend"})({"text": text}, S)
    assert plain.prepend_null is None
    with pytest.raises(ValueError, match="'melody'.*only the prepend route"):
        ConditionFuser(routes={"melody": "sum"})({"melody": melody}, S)
