import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from conditioners.tensors import ConditionTensors
from lit.lm_module import LMLightningModule, LMTrainingConfig, codebook_losses, warmup_cosine
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

K, CARD, DIM, T = 2, 8, 32, 12


def counting_codes(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """A synthetic token task: codebook q counts up from a random start, codes[q, t] = (start + t + q) mod card.

    Everything but the first frame is predictable, so the best cross-entropy is ln(card) / T = 0.17 nats.
    """
    start = torch.randint(0, CARD, (batch_size, 1, 1), generator=generator)
    return (start + torch.arange(T)[None, None, :] + torch.arange(K)[None, :, None]) % CARD  # [B, K, T]


def test_warmup_cosine_schedule_values():
    assert warmup_cosine(0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) == pytest.approx(0.55)
    assert warmup_cosine(110, warmup_steps=10, total_steps=110, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_training_config_refuses_invalid_values_by_name():
    with pytest.raises(ValueError, match="warmup_steps"):
        LMTrainingConfig(warmup_steps=10, total_steps=10)
    with pytest.raises(ValueError, match="lr"):
        LMTrainingConfig(lr=0.0)


def test_losses_ignore_invalid_positions():
    logits = torch.randn(2, 3, 5, 7)
    codes = torch.randint(0, 7, (2, 3, 5))
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[1, 3:] = False
    garbage = logits.clone()
    garbage[:, 1, 3:] = 1000 * torch.randn(2, 2, 7)
    ce, accuracy = codebook_losses(logits, codes, valid)
    ce_garbage, _ = codebook_losses(garbage, codes, valid)
    torch.testing.assert_close(ce, ce_garbage)
    expected = torch.nn.functional.cross_entropy(logits[:, 1, :3].reshape(-1, 7), codes[:, 1, :3].reshape(-1))
    torch.testing.assert_close(ce[1], expected)
    assert 0 <= accuracy.min() and accuracy.max() <= 1


def test_short_training_run_learns_the_counting_task():
    torch.manual_seed(0)
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=2, ffn_dim=64,
                             cross_attention=True))
    module = LMLightningModule(model, DelayPattern(K), LMTrainingConfig(lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0,
                                                                        warmup_steps=10, total_steps=150))
    generator = torch.Generator().manual_seed(0)
    memory = ConditionTensors(cross=torch.randn(16, 3, DIM), cross_mask=torch.ones(16, 3, dtype=torch.bool)).null()
    batches = [{"codes": counting_codes(16, generator), "conditions": memory} for _ in range(150)]
    held_out = counting_codes(64, generator)
    with torch.no_grad():
        initial = module.losses(held_out, None)[0].mean().item()
    trainer = pl.Trainer(max_steps=150, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(module, DataLoader(batches, batch_size=None))
    with torch.no_grad():
        final_ce, final_accuracy = module.losses(held_out, None)
    assert initial > 0.8 * math.log(CARD)
    assert final_ce.mean().item() < 0.3, f"loss {initial:.2f} -> {final_ce.mean().item():.2f}"
    assert trainer.logged_metrics["train/ce_q1"] >= 0 and "train/acc_q0" in trainer.logged_metrics


class LearnedMemory(torch.nn.Module):
    """A stand-in conditioner: one learned memory for every example; records the seq_len it was asked for."""

    def __init__(self):
        super().__init__()
        self.memory = torch.nn.Parameter(torch.randn(1, 3, DIM))
        self.seq_lens: list[int] = []

    def forward(self, batch: dict, seq_len: int) -> ConditionTensors:
        self.seq_lens.append(seq_len)
        B = batch["codes"].shape[0]
        return ConditionTensors(cross=self.memory.expand(B, -1, -1), cross_mask=torch.ones(B, 3, dtype=torch.bool))


def test_conditioner_module_is_called_with_the_sequence_length_and_trained():
    model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=DIM, num_heads=4, num_layers=1, ffn_dim=64))
    conditioner = LearnedMemory()
    module = LMLightningModule(model, DelayPattern(K), LMTrainingConfig(warmup_steps=0, total_steps=10),
                               conditioner=conditioner)
    optimizer = module.configure_optimizers()["optimizer"]
    assert any(p is conditioner.memory for group in optimizer.param_groups for p in group["params"])
    batch = {"codes": counting_codes(2, torch.Generator().manual_seed(0))}
    module.losses(batch["codes"], module.conditions(batch))[0].mean().backward()
    assert conditioner.seq_lens == [T + K]  # delay pattern: T + max delay + 1 steps
    assert conditioner.memory.grad.abs().sum() > 0
