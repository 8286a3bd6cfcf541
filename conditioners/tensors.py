"""The tensors the conditioners hand to the LM.

Shapes: B batch, L condition length (cross-attention memory), P prepended steps, S sequence steps, D model width.
"""
from dataclasses import dataclass, replace

import torch


@dataclass
class ConditionTensors:
    """Fused conditions for one batch, in the LM's width D.

    cross:      [B, L, D] cross-attention memory (all cross conditions concatenated along L)
    cross_mask: [B, L] bool, True where the memory holds a real position, False for padding
    prepend:    [B, P, D] embeddings placed before the first sequence step, or None
    add:        [B, S, D] or [B, 1, D] embeddings added to the sequence input, or None
    prepend_null: [B, P, D] the prepend of the null condition where it is not all zeros (MusicGen-Melody's null
                  melody is the chroma of silence: Condition.null), or None for zeros
    """

    cross: torch.Tensor | None = None
    cross_mask: torch.Tensor | None = None
    prepend: torch.Tensor | None = None
    add: torch.Tensor | None = None
    prepend_null: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.cross is None) != (self.cross_mask is None):
            raise ValueError("cross and cross_mask must be given together")
        if self.cross is not None and self.cross_mask.shape != self.cross.shape[:2]:
            raise ValueError(f"cross_mask shape {tuple(self.cross_mask.shape)} != cross [B, L] {tuple(self.cross.shape[:2])}")
        if self.prepend_null is not None:
            expected = None if self.prepend is None else tuple(self.prepend.shape)
            if tuple(self.prepend_null.shape) != expected:
                raise ValueError(f"prepend_null must be shaped as prepend {expected}, "
                                 f"got {tuple(self.prepend_null.shape)}")

    def null(self) -> "ConditionTensors":
        """The classifier-free-guidance null condition: same shapes, every memory position masked, zero embeddings
        (except a prepend_null, which is the null prepend).

        CFG dropout in training and the sampler's unconditional branch both use this, so they agree exactly.
        """
        return replace(
            self,
            cross=None if self.cross is None else torch.zeros_like(self.cross),
            cross_mask=None if self.cross_mask is None else torch.zeros_like(self.cross_mask),
            prepend=None if self.prepend is None else (torch.zeros_like(self.prepend) if self.prepend_null is None
                                                       else self.prepend_null),
            add=None if self.add is None else torch.zeros_like(self.add),
        )

    def where(self, keep: torch.Tensor) -> "ConditionTensors":
        """Per example, keep the condition (keep[b] True) or replace it by the null condition. keep: [B] bool."""
        null = self.null()

        def pick(value: torch.Tensor | None, empty: torch.Tensor | None) -> torch.Tensor | None:
            if value is None:
                return None
            shape = (-1,) + (1,) * (value.dim() - 1)
            return torch.where(keep.view(shape), value, empty)

        return ConditionTensors(
            cross=pick(self.cross, null.cross),
            cross_mask=pick(self.cross_mask, null.cross_mask),
            prepend=pick(self.prepend, null.prepend),
            add=pick(self.add, null.add),
            prepend_null=self.prepend_null,
        )

    def rows(self, rows: slice) -> "ConditionTensors":
        """The conditions of the batch items in `rows` (e.g. one conditioner call split into two batches)."""
        return ConditionTensors(**{name: None if value is None else value[rows] for name, value in vars(self).items()})

    def cat(self, other: "ConditionTensors") -> "ConditionTensors":
        """Stack two batches along B (e.g. conditional then null for one CFG forward)."""

        def join(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
            return None if first is None else torch.cat([first, second], dim=0)

        return ConditionTensors(
            cross=join(self.cross, other.cross),
            cross_mask=join(self.cross_mask, other.cross_mask),
            prepend=join(self.prepend, other.prepend),
            add=join(self.add, other.add),
            prepend_null=join(self.prepend_null, other.prepend_null),
        )
