"""The LM module's fine-tuning controls: non-finite steps are skipped (weights and AdamW moments untouched), counted
in TensorBoard, and too many in a row stop the run; frozen layers and embeddings keep their weights."""
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import Dataset

from lit.datamodule import StreamDataModule
from lit.lm_module import LMLightningModule, LMTrainingConfig, NonFiniteTraining
from lm.lm import LMConfig, LMModel
from lm.patterns import DelayPattern

K, CARD, FRAMES = 2, 16, 12


class SyntheticCodes(Dataset):
    def __getitem__(self, position: int) -> dict:
        generator = torch.Generator().manual_seed(position)
        return {"codes": torch.randint(0, CARD, (K, FRAMES), generator=generator)}


class PoisonedSteps(LMLightningModule):
    """Multiplies the loss by NaN (or inf) on the listed training batches: NaN gradients flow back through it."""

    def __init__(self, poisoned: set[int], value: float = float("nan"), **training):
        torch.manual_seed(0)
        model = LMModel(LMConfig(num_codebooks=K, card=CARD, dim=32, num_heads=2, num_layers=3, ffn_dim=64,
                                 cross_attention=False))
        super().__init__(model, DelayPattern(K), LMTrainingConfig(
            **{"lr": 1e-2, "warmup_steps": 0, "total_steps": 100, **training}))
        self.poisoned, self.value = poisoned, value
        self.history: list[dict[str, torch.Tensor]] = []

    def losses(self, codes, conditions):
        cross_entropy, accuracy = super().losses(codes, conditions)
        if self.global_step in self.poisoned:
            cross_entropy = cross_entropy * self.value
        return cross_entropy, accuracy

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.history.append({name: tensor.detach().clone() for name, tensor in self.state_dict().items()})


def fit(module: pl.LightningModule, steps: int, logger=False) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=logger,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)
    trainer.fit(module, datamodule=StreamDataModule(SyntheticCodes(), SyntheticCodes(), batch_size=2, num_workers=0))
    return trainer


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_step_changes_nothing_and_is_counted(tmp_path, value):
    module = PoisonedSteps({2}, value)
    fit(module, steps=4, logger=TensorBoardLogger(tmp_path, name="tb", version=""))
    before, after_poisoned, after_next = module.history[1], module.history[2], module.history[3]
    assert all(torch.equal(before[name], after_poisoned[name]) for name in before)  # step 2 moved nothing
    assert any(not torch.equal(after_poisoned[name], after_next[name]) for name in before)  # step 3 trained again
    assert all(torch.isfinite(tensor).all() for tensor in after_next.values())
    assert module.skipped_steps == 1 and module.consecutive_skips == 0
    # AdamW's moments skipped it too: each parameter's state counts 3 updates of 4 steps
    optimizer = module.trainer.optimizers[0]
    assert {int(state["step"]) for state in optimizer.state.values()} == {3}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    skipped = {event.step: event.value for event in events.Scalars("train/skipped_steps")}
    assert skipped[max(skipped)] == 1.0 and skipped[min(skipped)] == 0.0


def test_a_skipped_step_equals_a_run_without_that_batch_s_update():
    """Skipping is exact: with step 1 poisoned, the weights after step 1 are those after step 0."""
    poisoned, clean = PoisonedSteps({1}), PoisonedSteps(set())
    fit(poisoned, steps=2)
    fit(clean, steps=1)
    assert all(torch.equal(poisoned.history[1][name], clean.history[0][name]) for name in clean.history[0])


def test_too_many_non_finite_steps_in_a_row_stop_with_a_message_naming_the_limit():
    module = PoisonedSteps({1, 2, 3, 4, 5}, max_consecutive_skips=3)
    with pytest.raises(NonFiniteTraining, match="3 steps in a row.*lm.training.max_consecutive_skips"):
        fit(module, steps=8)
    assert module.skipped_steps == 3 and len(module.history) == 3  # stopped at the third skip, before its batch end


def test_frozen_layers_and_embeddings_keep_their_weights_and_the_rest_trains():
    module = PoisonedSteps(set(), freeze_layers=2, freeze_embeddings=True)
    initial = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    fit(module, steps=3)
    final = module.state_dict()
    frozen = [name for name in initial if name.startswith(("model.transformer.layers.0.", "model.transformer.layers.1.",
                                                           "model.embedding."))]
    trained = [name for name in initial if name.startswith(("model.transformer.layers.2.", "model.heads"))]
    assert frozen and trained
    assert all(torch.equal(initial[name], final[name]) for name in frozen)
    assert all(not torch.equal(initial[name], final[name]) for name in trained)


def test_freezing_more_layers_than_the_model_has_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="lm.training.freeze_layers=4 but the LM has 3 layers"):
        PoisonedSteps(set(), freeze_layers=4)
    with pytest.raises(ValueError, match="lm.training.max_consecutive_skips"):
        LMTrainingConfig(max_consecutive_skips=0)
