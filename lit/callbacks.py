"""Callbacks that make a training run reproducible and resumable to the step."""
import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger

from codec.codec import Codec
from data.audio import limit_peak
from eval.plots import log_mel
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline, item_seeds


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


class ValidationSamples(Callback):
    """LM stage: after each validation, generate the fixed prompts and log their audio and spectrograms to
    TensorBoard, so a run shows what it sounds like, not only its cross-entropy."""

    def __init__(self, codec_dir: str, prompts: list[str], seconds: float, generation: GenerationConfig, seed: int):
        self.codec_dir, self.prompts, self.seconds = codec_dir, prompts, seconds
        self.generation, self.seed = generation, seed
        self.codec = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking or not isinstance(trainer.logger, TensorBoardLogger):
            return
        if self.codec is None:
            self.codec = Codec.load(self.codec_dir, device=pl_module.device).eval()
        pipeline = GenerationPipeline(pl_module.model, pl_module.pattern, pl_module.conditioner.provider, self.codec,
                                      self.generation)
        was_training = pl_module.training
        pl_module.eval()
        audio = pipeline.generate(self.prompts, self.seconds, seeds=item_seeds(self.seed, len(self.prompts))).audio
        pl_module.train(was_training)
        experiment = trainer.logger.experiment
        for index, (prompt, wav) in enumerate(zip(self.prompts, audio)):
            wav = limit_peak(wav, 1.0)
            experiment.add_audio(f"samples/{index}", wav.mean(dim=0), trainer.global_step, self.codec.sample_rate)
            image = log_mel(wav, self.codec.sample_rate)
            image = ((image - image.max() + 8) / 8).clamp(0, 1).flip(0)  # 80 dB range, low frequencies at the bottom
            experiment.add_image(f"samples/{index}_mel", image[None], trainer.global_step)
            experiment.add_text(f"samples/{index}_prompt", prompt, trainer.global_step)
