"""Training the TTS LM: next-token cross-entropy on the targets of the loss mask, AdamW, warmup + cosine.

The targets are what `TTSFormat.build` marks (tts.format): the audio codes and [EOS] by default, the text too with
`loss_on_text`. The logits at position i predict ids[i + 1], so the loss reads logits[:, :-1] against
ids[:, 1:] where loss_mask[:, 1:]; padding is never a target.

The optimiser, its schedule and the non-finite step guard are the music LM's (lit/lm_module.py), taken as the
same methods on the same attributes (`training_config`, `last_loss`, the skip counters), with the same training
keys (`LMTrainingConfig`).

Batch: {"ids": [B, L] long, "loss_mask": [B, L] bool, "attention_mask": [B, L] bool} (data.tts_dataset).
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from safetensors.torch import save_file

from lit.lm_module import LMLightningModule, LMTrainingConfig
from lm.hf_tts_lm import HFTTSLM
from lm.tts_lm import TTSLM

WEIGHTS_FILE = "tts.safetensors"


def target_losses(logits: torch.Tensor, ids: torch.Tensor, loss_mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, L, V], ids [B, L], loss_mask [B, L] -> mean cross-entropy and accuracy over the targets."""
    predicted, targets, mask = logits[:, :-1], ids[:, 1:], loss_mask[:, 1:]  # [B, L - 1, V], [B, L - 1] x2
    chosen = predicted[mask].float()  # [N, V]
    cross_entropy = F.cross_entropy(chosen, targets[mask])
    accuracy = (chosen.argmax(dim=-1) == targets[mask]).float().mean()
    return cross_entropy, accuracy


class TTSLightningModule(LightningModule):
    # The music LM's optimiser and non-finite guard (see the module docstring).
    configure_optimizers = LMLightningModule.configure_optimizers
    on_before_optimizer_step = LMLightningModule.on_before_optimizer_step
    on_save_checkpoint = LMLightningModule.on_save_checkpoint
    on_load_checkpoint = LMLightningModule.on_load_checkpoint

    def __init__(self, model: TTSLM | HFTTSLM, training: LMTrainingConfig):
        super().__init__()
        self.model, self.training_config = model, training
        model.freeze(training.freeze_layers, training.freeze_embeddings)
        self.skipped_steps = self.consecutive_skips = 0  # non-finite steps: in all, and the current run of them
        self.last_loss: torch.Tensor | None = None

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        loss, accuracy = target_losses(self.model(batch["ids"]), batch["ids"], batch["loss_mask"])
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/accuracy", accuracy)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.last_loss = loss.detach()
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def save(self, directory: str | Path) -> None:
        """The model's weights as safetensors (builders.load_tts_export reads them); a model started from a Hugging
        Face LM also saves its extended architecture (lm/hf_tts_lm.py)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, HFTTSLM):
            self.model.save_config(directory)
        save_file({name: tensor.detach().contiguous() for name, tensor in self.model.state_dict().items()},
                  directory / WEIGHTS_FILE)
