"""What every conditioner returns before fusion: one embedding sequence and its padding mask."""
from dataclasses import dataclass

import torch


@dataclass
class Condition:
    """One condition for a batch, already projected to the LM width D.

    embeddings: [B, L, D], zero wherever mask is False, so a padded or missing position adds nothing when summed
    mask:       [B, L] bool, True for a real position, False for padding or a missing (null) attribute
    """

    embeddings: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 3 or self.mask.shape != self.embeddings.shape[:2]:
            raise ValueError(
                f"Condition needs embeddings [B, L, D] and mask [B, L], got {tuple(self.embeddings.shape)} "
                f"and {tuple(self.mask.shape)}"
            )
