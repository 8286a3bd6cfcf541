"""Training the LM: cross-entropy per codebook over the valid pattern positions, AdamW, warmup + cosine schedule.

Guards: a step whose loss or gradient norm is not finite (fp16 overflow, a bad batch, a too-high fine-tuning lr)
changes nothing: its gradients are dropped before the optimizer sees them, so AdamW neither moves the weights nor
updates its moments. Skips are counted (train/skipped_steps) and `max_consecutive_skips` in a row stop the run.

Batch: {"codes": [B, K, T] long, ...}. The conditions come either from the batch (`batch["conditions"]`, a
ConditionTensors; absent or None = unconditional), or, when a `conditioner` is given, from
`conditioner(batch, seq_len=S)`: a module there (BatchConditioner around a conditioners.ConditionProvider, which
applies its own CFG dropout in training) is a submodule, so its parameters train and are checkpointed with the LM.
"""
import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from safetensors.torch import save_file
from torch import nn

from conditioners.attributes import ConditioningAttributes
from conditioners.conditioner import ConditionProvider
from conditioners.tensors import ConditionTensors
from lm.lm import LMModel
from lm.lora import merge_adapter, save_adapter
from lm.patterns import PatternProvider


WEIGHTS_FILE = "lm.safetensors"
ADAPTER_DIRECTORY = "adapter"  # beside WEIGHTS_FILE when the LM carries LoRA adapters (lm.lora)


@dataclass
class LMTrainingConfig:
    """configs/lm/*.yaml `training:`; defaults are MusicGen's (Copet et al. 2023)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 4000
    total_steps: int = 1_000_000
    min_lr_ratio: float = 0.0
    freeze_layers: int = 0  # the first N transformer blocks are not trained
    freeze_embeddings: bool = False  # the code embeddings are not trained
    max_consecutive_skips: int = 10  # non-finite steps in a row that stop the run

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"warmup_steps must be in [0, total_steps={self.total_steps}), got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.freeze_layers < 0:
            raise ValueError(f"lm.training.freeze_layers must be >= 0, got {self.freeze_layers}")
        if self.max_consecutive_skips < 1:
            raise ValueError(f"lm.training.max_consecutive_skips must be >= 1, got {self.max_consecutive_skips}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate multiplier: linear from 0 to 1 over warmup_steps, then cosine to min_lr_ratio at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def codebook_losses(logits: torch.Tensor, codes: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B, K, T, card], codes [B, K, T], valid [K, T] -> cross-entropy [K] and accuracy [K] over valid frames."""
    B, K, T, card = logits.shape
    weights = valid.expand(B, K, T).to(logits.dtype)  # [B, K, T]
    count = weights.sum(dim=(0, 2)).clamp_min(1)  # [K]
    cross_entropy = F.cross_entropy(logits.reshape(-1, card).float(), codes.reshape(-1), reduction="none").view(B, K, T)
    correct = (logits.argmax(dim=-1) == codes).to(logits.dtype)
    return (cross_entropy * weights).sum(dim=(0, 2)) / count, (correct * weights).sum(dim=(0, 2)) / count


class BatchConditioner(nn.Module):
    """Token-window batches (data.datasets.collate_token_windows) -> ConditionTensors through a ConditionProvider:
    each example's description and categorical attributes become its ConditioningAttributes."""

    def __init__(self, provider: ConditionProvider):
        super().__init__()
        self.provider = provider

    def forward(self, batch: dict, seq_len: int) -> ConditionTensors:
        attributes = [ConditioningAttributes(text={**fields, "description": description})
                      for description, fields in zip(batch["description"], batch["attributes"])]
        return self.provider(attributes, seq_len=seq_len)


class NonFiniteTraining(RuntimeError):
    """Raised when `max_consecutive_skips` steps in a row had a non-finite loss or gradient norm."""


class LMLightningModule(LightningModule):
    def __init__(self, model: LMModel, pattern: PatternProvider, training: LMTrainingConfig,
                 conditioner: Callable[..., ConditionTensors] | None = None):
        super().__init__()
        if pattern.num_codebooks != model.config.num_codebooks:
            raise ValueError(f"pattern num_codebooks must equal the model's {model.config.num_codebooks}, "
                             f"got {pattern.num_codebooks}")
        if training.freeze_layers > model.config.num_layers:
            raise ValueError(f"lm.training.freeze_layers={training.freeze_layers} but the LM has "
                             f"{model.config.num_layers} layers")
        self.model, self.pattern, self.training_config = model, pattern, training
        self.conditioner = conditioner
        self.model.transformer.layers[:training.freeze_layers].requires_grad_(False)
        if training.freeze_embeddings:
            self.model.embedding.requires_grad_(False)
        self.skipped_steps = self.consecutive_skips = 0  # non-finite steps: in all, and the current run of them
        self.last_loss: torch.Tensor | None = None

    def losses(self, codes: torch.Tensor, conditions: ConditionTensors | None) -> tuple[torch.Tensor, torch.Tensor]:
        """codes [B, K, T] -> per-codebook cross-entropy [K] and accuracy [K] of predicting them."""
        B, K, T = codes.shape
        pattern = self.pattern.get_pattern(T, codes.device)
        sequence = pattern.build(codes, special_token=self.model.special_token)  # [B, K, S]
        logits = self.model(sequence, conditions)  # [B, K, S, card]
        logits, valid = pattern.revert_logits(logits)  # [B, K, T, card], [K, T]
        return codebook_losses(logits, codes, valid)

    def conditions(self, batch: dict) -> ConditionTensors | None:
        if self.conditioner is None:
            return batch.get("conditions")
        num_steps = self.pattern.get_pattern(batch["codes"].shape[2]).num_steps
        return self.conditioner(batch, seq_len=num_steps)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        cross_entropy, accuracy = self.losses(batch["codes"], self.conditions(batch))
        loss = cross_entropy.mean()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        for codebook in range(cross_entropy.shape[0]):
            self.log(f"{stage}/ce_q{codebook}", cross_entropy[codebook])
            self.log(f"{stage}/acc_q{codebook}", accuracy[codebook])
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._step(batch, "train")
        self.last_loss = loss.detach()
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping and the optimizer: drop the step's gradients if the loss or their norm is not finite."""
        norms = [torch.linalg.vector_norm(p.grad.float()) for p in self.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        finite = bool(torch.isfinite(norm)) and (self.last_loss is None or bool(torch.isfinite(self.last_loss)))
        if finite:
            self.consecutive_skips = 0
        else:
            for parameter in self.parameters():
                parameter.grad = None  # AdamW skips parameters without a gradient: no update, no moment change
            self.skipped_steps += 1
            self.consecutive_skips += 1
        self.log("train/grad_norm", norm)
        self.log("train/skipped_steps", float(self.skipped_steps))
        if self.consecutive_skips >= self.training_config.max_consecutive_skips:
            raise NonFiniteTraining(
                f"{self.consecutive_skips} steps in a row (to step {self.global_step}) had a non-finite loss or "
                f"gradient norm (last loss {float(self.last_loss):.4g}, gradient norm {float(norm):.4g}), the limit "
                f"lm.training.max_consecutive_skips: lower lm.training.lr, set trainer.gradient_clip_val, or use "
                f"trainer.precision=bf16-mixed instead of 16-mixed; resume=true continues from the last checkpoint")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["non_finite_steps"] = {"skipped": self.skipped_steps, "consecutive": self.consecutive_skips}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counts = checkpoint.get("non_finite_steps", {"skipped": 0, "consecutive": 0})
        self.skipped_steps, self.consecutive_skips = counts["skipped"], counts["consecutive"]

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def save(self, directory: str | Path) -> None:
        """The LM's and the conditioner's trainable weights as safetensors (builders.load_lm_export reads them;
        frozen text encoders are loaded from their own source). An LM with LoRA adapters is saved merged, a plain
        LM's keys, from a copy (the trained LM keeps its adapters), and the adapter alone goes to
        ADAPTER_DIRECTORY in PEFT's layout (lm.lora.save_adapter)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        if hasattr(self.model, "peft_config"):
            save_adapter(self.model, directory / ADAPTER_DIRECTORY)
            merged = merge_adapter(copy.deepcopy(self.model)).state_dict()
            state = {**{name: tensor for name, tensor in state.items() if not name.startswith("model.")},
                     **{f"model.{name}": tensor for name, tensor in merged.items()}}
        save_file({name: tensor.detach().contiguous() for name, tensor in state.items()}, directory / WEIGHTS_FILE)

    def configure_optimizers(self):
        config = self.training_config
        parameters = [p for p in self.parameters() if p.requires_grad]  # the LM's and a conditioner module's
        matrices = [p for p in parameters if p.dim() >= 2]  # weights and embeddings decay; norms and biases do not
        vectors = [p for p in parameters if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": matrices, "weight_decay": config.weight_decay}, {"params": vectors, "weight_decay": 0.0}],
            lr=config.lr, betas=tuple(config.betas),
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(
            step, warmup_steps=config.warmup_steps, total_steps=config.total_steps, min_lr_ratio=config.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
