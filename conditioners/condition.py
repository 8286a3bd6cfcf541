"""What every conditioner returns before fusion: one embedding sequence and its padding mask."""
from dataclasses import dataclass

import torch


@dataclass
class Condition:
    """One condition for a batch, already projected to the LM width D.

    embeddings: [B, L, D], zero wherever mask is False, so a padded or missing position adds nothing when summed
    mask:       [B, L] bool, True for a real position, False for padding or a missing (null) attribute
    null:       [B, L, D] the embeddings of the classifier-free-guidance null condition where they are not zeros (a
                chroma melody of fixed `length`: the chroma of silence, as MusicGen-Melody), or None for zeros
    """

    embeddings: torch.Tensor
    mask: torch.Tensor
    null: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.embeddings.dim() != 3 or self.mask.shape != self.embeddings.shape[:2]:
            raise ValueError(
                f"Condition needs embeddings [B, L, D] and mask [B, L], got {tuple(self.embeddings.shape)} "
                f"and {tuple(self.mask.shape)}"
            )
        if self.null is not None and self.null.shape != self.embeddings.shape:
            raise ValueError(f"Condition null must be shaped as embeddings {tuple(self.embeddings.shape)}, got "
                             f"{tuple(self.null.shape)}")
