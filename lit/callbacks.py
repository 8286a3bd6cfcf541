"""Callbacks that make a training run reproducible and resumable to the step."""
import torch
from pytorch_lightning import Callback, LightningModule, Trainer


def completed_batches(trainer: Trainer) -> int:
    """Training batches whose optimizer steps are done, as a checkpoint records them.

    `processed`, not `completed`: a checkpoint written at the end of batch n (ModelCheckpoint runs in
    on_train_batch_end) holds n + 1 processed but n completed batches. Not the optimizer-step count either, which
    counts both optimizers of the codec GAN's manual optimisation.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.total.processed


class StepSeed(Callback):
    """Reseeds torch before every training batch from (seed, batch number).

    Everything random inside a step (dropout, CFG dropout, quantizer dropout, dead-code restarts) then depends on
    the step alone, so a run resumed from a checkpoint draws exactly what the uninterrupted run drew.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        step_seed = self.seed * 1_000_003 + completed_batches(trainer) * trainer.world_size + trainer.global_rank
        torch.manual_seed(step_seed)
