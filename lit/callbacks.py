"""Callbacks that make a training run reproducible and resumable to the step, and let it be heard."""
from dataclasses import dataclass, field, replace

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from codec.codec import Codec
from codec.loading import load_codec
from data.audio import limit_peak
from eval.plots import log_mel
from lm.generator import GenerationConfig
from lm.tts_format import TTSFormat
from lm.tts_generator import TTSGenerationConfig
from pipeline import GenerationPipeline, item_seeds
from speech_pipeline import SpeechPipeline, check_request


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
        for index, (prompt, wav) in enumerate(zip(self.prompts, audio)):
            log_sample(trainer, f"samples/{index}", wav, self.codec.sample_rate, "prompt", prompt)


def log_sample(trainer: Trainer, tag: str, wav: Tensor, sample_rate: int, caption_name: str, caption: str) -> None:
    """wav [C, samples] to TensorBoard: mono peak-limited audio, its log-mel image and its caption, at this step."""
    experiment = trainer.logger.experiment
    wav = limit_peak(wav, 1.0)
    experiment.add_audio(tag, wav.mean(dim=0), trainer.global_step, sample_rate)
    image = log_mel(wav, sample_rate)
    image = ((image - image.max() + 8) / 8).clamp(0, 1).flip(0)  # 80 dB range, low frequencies at the bottom
    experiment.add_image(f"{tag}_mel", image[None], trainer.global_step)
    experiment.add_text(f"{tag}_{caption_name}", caption, trainer.global_step)


@dataclass
class TTSSamplesConfig:
    """configs/tts/*.yaml `samples:`: what `TTSValidationSamples` speaks after every validation."""

    texts: list[str] = field(default_factory=list)  # fixed sentences; [] = no samples
    speakers: list[str | None] | None = None  # one voice per text (None items: the model picks); None = the
    # training speakers in order, cycled (no voice for a model without speakers)
    max_audio_frames: int = 64  # coarse frames per sample at most; the run's other generation settings apply


class TTSValidationSamples(Callback):
    """TTS stage: after each validation, speak the fixed texts in their voices with fixed seeds through
    `SpeechPipeline` and log audio, spectrogram and text to TensorBoard, as `ValidationSamples` does for music."""

    def __init__(self, codec_dir: str, tts_format: TTSFormat, samples: TTSSamplesConfig,
                 generation: TTSGenerationConfig, seed: int):
        speakers = samples.speakers
        if speakers is None:
            known = tts_format.config.speakers
            speakers = [known[index % len(known)] if known else None for index in range(len(samples.texts))]
        self.codec_dir, self.format, self.texts, self.speakers = codec_dir, tts_format, list(samples.texts), speakers
        self.generation = replace(generation, max_audio_frames=samples.max_audio_frames)
        self.seeds = item_seeds(seed, len(self.texts))
        self.codec = None
        try:
            if self.texts:
                check_request(tts_format, self.texts, self.speakers, self.seeds)
        except ValueError as error:
            raise ValueError(f"tts.samples: {error}") from None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (not self.texts or not trainer.is_global_zero or trainer.sanity_checking
                or not isinstance(trainer.logger, TensorBoardLogger)):
            return
        if self.codec is None:
            self.codec = load_codec(self.codec_dir, device=pl_module.device)
        pipeline = SpeechPipeline(pl_module.model, self.format, self.codec, self.generation)
        was_training = pl_module.training
        pl_module.eval()
        audio = pipeline.speak(self.texts, self.speakers, self.seeds).audio
        pl_module.train(was_training)
        for index, (text, speaker, wav) in enumerate(zip(self.texts, self.speakers, audio)):
            log_sample(trainer, f"samples/{index}", wav, self.codec.sample_rate, "text",
                       text if speaker is None else f"{speaker}: {text}")
