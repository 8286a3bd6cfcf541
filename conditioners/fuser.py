"""Route each named condition to where the LM consumes it, and merge conditions that share a route.

    cross              memory for cross attention: conditions concatenated along L, masks kept   -> cross [B, L, D]
    prepend            placed before the first sequence step, conditions concatenated in order -> prepend [B, P, D]
    sum                added to every sequence step: L must be 1 (a global vector) or seq_len  -> add [B, S or 1, D]
    input_interpolate  resampled (linearly, along L) to seq_len, then added                     -> add [B, S, D]

Routes are applied in the config's order, so the memory layout is deterministic. Masked positions are zero in
every Condition, so a missing condition adds nothing through sum / input_interpolate. A condition whose null (CFG)
embeddings are not zeros (Condition.null: a chroma melody of fixed length) can only be prepended, where they become
ConditionTensors.prepend_null.
"""
import torch
import torch.nn.functional as F
from einops import rearrange

from conditioners.condition import Condition
from conditioners.tensors import ConditionTensors

FUSE_MODES = ("cross", "prepend", "sum", "input_interpolate")


class ConditionFuser:
    """dict of named Conditions -> ConditionTensors, following `routes` (condition name -> fuse mode)."""

    def __init__(self, routes: dict[str, str]):
        for name, mode in routes.items():
            if mode not in FUSE_MODES:
                raise ValueError(f"fuse mode for {name!r} must be one of {FUSE_MODES}, got {mode!r}")
        self.routes = dict(routes)

    def __call__(self, conditions: dict[str, Condition], seq_len: int | None) -> ConditionTensors:
        if set(conditions) != set(self.routes):
            raise ValueError(f"conditions {sorted(conditions)} do not match fuser routes {sorted(self.routes)}")
        cross, prepend, add = [], [], None
        for name, mode in self.routes.items():
            condition = conditions[name]
            if condition.null is not None and mode != "prepend":
                raise ValueError(f"condition {name!r} has null embeddings that are not zeros (a chroma melody with a "
                                 f"fixed length), which only the prepend route carries; got route {mode!r}")
            if mode == "cross":
                cross.append(condition)
            elif mode == "prepend":
                prepend.append(condition)
            else:
                added = self._to_add(name, mode, condition.embeddings, seq_len)
                add = added if add is None else add + added
        prepend_null = None
        if any(condition.null is not None for condition in prepend):
            prepend_null = torch.cat([torch.zeros_like(condition.embeddings) if condition.null is None
                                      else condition.null for condition in prepend], dim=1)  # [B, P, D]
        return ConditionTensors(
            cross=torch.cat([condition.embeddings for condition in cross], dim=1) if cross else None,
            cross_mask=torch.cat([condition.mask for condition in cross], dim=1) if cross else None,
            prepend=torch.cat([condition.embeddings for condition in prepend], dim=1) if prepend else None,
            add=add,
            prepend_null=prepend_null,
        )

    @staticmethod
    def _to_add(name: str, mode: str, embeddings: torch.Tensor, seq_len: int | None) -> torch.Tensor:
        """The [B, S or 1, D] tensor a sum / input_interpolate condition adds to the sequence input."""
        length = embeddings.shape[1]
        if mode == "sum":
            if length != 1 and length != seq_len:
                raise ValueError(f"sum condition {name!r} has length {length}; it must be 1 or seq_len ({seq_len})")
            return embeddings
        if seq_len is None:
            raise ValueError(f"input_interpolate condition {name!r} needs seq_len, got None")
        resampled = F.interpolate(rearrange(embeddings, "b l d -> b d l"), size=seq_len, mode="linear")
        return rearrange(resampled, "b d s -> b s d")
