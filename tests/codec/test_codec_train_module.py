"""The codec GAN LightningModule: a short training run, exact checkpoint resume, validation logging."""
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from codec import Codec, CodecConfig
from codec.losses import MultiScaleMelLoss
from lit.callbacks import StepSeed
from lit.codec_module import CodecLossConfig, CodecModule
from eval.pitch import chroma_cosine

SAMPLE_RATE = 16_000
TINY_PRESET = Path(__file__).parents[2] / "configs" / "codec_loss" / "tiny.yaml"


class Harmonics(Dataset):
    """Clips [1, T] of 4 harmonics of a random f0 in 100..400 Hz with random phases, over a -50 dB noise floor
    (real recordings have one; without it the log-mel loss is dominated by exactly silent bands)."""

    def __init__(self, num_clips: int, length: int = 4096, seed: int = 1):
        generator = torch.Generator().manual_seed(seed)
        self.f0 = 100 + 300 * torch.rand(num_clips, generator=generator)
        self.phases = 2 * torch.pi * torch.rand(num_clips, 4, generator=generator)
        self.noise = 0.003 * torch.randn(num_clips, 1, length, generator=generator)
        self.length = length

    def __len__(self) -> int:
        return len(self.f0)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        t = torch.arange(self.length) / SAMPLE_RATE
        tone = sum(
            0.4 / k * torch.sin(2 * torch.pi * self.f0[index] * k * t + self.phases[index, k - 1]) for k in range(1, 5)
        )
        return {"wav": tone.unsqueeze(0) + self.noise[index]}


def _tiny_codec() -> Codec:
    config = CodecConfig(
        sample_rate=SAMPLE_RATE,
        channels=1,
        seanet=dict(dimension=16, n_filters=8, ratios=(4, 4), lstm_layers=0),
        quantizer=dict(num_codebooks=4, codebook_size=64, lookup="factorized", dropout=0.5),
        bandwidths=(6.0, 12.0),
    )
    return Codec(config)


def _tiny_loss(**overrides) -> CodecLossConfig:
    """The configs/codec_loss/tiny.yaml preset, with dotted-key overrides."""
    config = OmegaConf.load(TINY_PRESET)
    for key, value in overrides.items():
        OmegaConf.update(config, key, value)
    return CodecLossConfig(**OmegaConf.to_container(config))


def _trainer(max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


class MelRecorder(pl.Callback):
    def __init__(self):
        self.mel, self.discriminator_loss = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.mel.append(float(metrics["train/mel"]))
        if "train/discriminator_loss" in metrics:
            self.discriminator_loss.append(float(metrics["train/discriminator_loss"]))


def test_short_gan_run_lowers_mel_loss_below_a_spectral_envelope_match():
    steps, adversarial_start = 30, 15
    loss = _tiny_loss(adversarial_start_step=adversarial_start)
    module = CodecModule(_tiny_codec(), loss)
    data = DataLoader(Harmonics(8 * steps), batch_size=8)
    recorder = MelRecorder()
    # Reconstruction-only batches take one optimiser step, GAN batches two.
    _trainer(adversarial_start + 2 * (steps - adversarial_start), [recorder]).fit(module, data)

    assert len(recorder.mel) == steps
    assert len(recorder.discriminator_loss) == steps - adversarial_start
    initial, final = sum(recorder.mel[:3]) / 3, sum(recorder.mel[-5:]) / 5
    # Baseline: noise with each clip's loudness matches level and broadband envelope but no harmonics.
    clips = torch.stack([Harmonics(8, seed=2)[i]["wav"] for i in range(8)])
    noise = torch.randn_like(clips)
    noise = noise * clips.pow(2).mean(dim=-1, keepdim=True).sqrt() / noise.pow(2).mean(dim=-1, keepdim=True).sqrt()
    noise_baseline = MultiScaleMelLoss(SAMPLE_RATE, loss.mel)(noise, clips).item()
    # Measured over model seeds 0-2: initial 3.3-5.2, noise baseline ~4.3, final 1.23-1.32 (a clip with the wrong
    # f0 scores ~1.3, the noise floor alone ~0.2). Below half the noise baseline means the codec reproduces
    # harmonic structure, not only loudness.
    assert final < 0.5 * initial, (initial, final)
    assert final < 0.5 * noise_baseline, (noise_baseline, final)
    # The GAN phase does not undo reconstruction: mel stays below its value when the discriminator started.
    assert final < recorder.mel[adversarial_start - 1] * 1.2
    # The discriminator learns: its least-squares loss fell from ~1.0 to ~0.5 over 15 batches in those runs.
    first, last = recorder.discriminator_loss[:3], recorder.discriminator_loss[-3:]
    assert sum(last) < 0.8 * sum(first), recorder.discriminator_loss


def _optimizer_states(trainer: pl.Trainer) -> list[dict]:
    return [optimizer.state_dict() for optimizer in trainer.optimizers]


def _assert_states_equal(actual, expected):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            _assert_states_equal(actual[key], expected[key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            _assert_states_equal(a, e)
    elif isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    else:
        assert actual == expected


def test_checkpoint_round_trip_restores_state_and_resumes_exactly(tmp_path):
    # Balancer on (its EMA is state), adversarial from the second batch: both kinds of step are crossed.
    loss = _tiny_loss(adversarial_start_step=1, **{"balancer.enabled": True})

    def run(max_steps: int, checkpoint: Path | None = None, model_seed: int = 0):
        torch.manual_seed(model_seed)
        module = CodecModule(_tiny_codec(), loss)
        # One batch per epoch: every epoch sees the same batch, so resuming at an epoch end is exact.
        data = DataLoader(Harmonics(4), batch_size=4)
        trainer = _trainer(max_steps, [StepSeed(0)])
        trainer.fit(module, data, ckpt_path=checkpoint)
        return module, trainer

    # Batch 1: generator step only; batches 2, 3: discriminator + generator (max_steps counts optimiser steps).
    uninterrupted, uninterrupted_trainer = run(max_steps=5)
    assert uninterrupted_trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
    first_half, trainer = run(max_steps=3)
    checkpoint = tmp_path / "two_batches.ckpt"
    trainer.save_checkpoint(checkpoint)

    # Restore without training: identical weights, balancer EMA and optimiser state (from a different init).
    restored, restored_trainer = run(max_steps=3, checkpoint=checkpoint, model_seed=1)
    _assert_states_equal(restored.state_dict(), first_half.state_dict())
    _assert_states_equal(_optimizer_states(restored_trainer), _optimizer_states(trainer))
    assert restored.balancer.step_counts.sum() > 0

    # Resume and train one more batch: identical to the uninterrupted run.
    resumed, _ = run(max_steps=5, checkpoint=checkpoint, model_seed=1)
    _assert_states_equal(resumed.state_dict(), uninterrupted.state_dict())
    assert any(not torch.equal(a, b) for a, b in zip(resumed.parameters(), first_half.parameters()))


def test_validation_logs_metrics_per_bandwidth_and_fixed_clips_to_tensorboard(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    module = CodecModule(_tiny_codec(), _tiny_loss(), logged_clips=2)
    clips = Harmonics(4)
    logger = TensorBoardLogger(tmp_path, name="codec", version=0)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, DataLoader(clips, batch_size=4))

    wav = torch.stack([clips[i]["wav"] for i in range(4)])
    with torch.no_grad():
        expected_mel = module.mel_loss(module.codec.eval()(wav).wav, wav).item()
        expected_chroma = chroma_cosine(module.codec(wav).wav, wav, module.codec.sample_rate).mean().item()
    assert metrics["val/mel"] == pytest.approx(expected_mel, rel=1e-5)
    assert metrics["val/chroma_cosine"] == pytest.approx(expected_chroma, rel=1e-5)
    assert {"val/si_sdr_6kbps", "val/si_sdr_12kbps", "val/mel_6kbps", "val/mel_12kbps", "val/chroma_cosine_6kbps",
            "val/chroma_cosine_12kbps"} <= metrics.keys()

    events = EventAccumulator(logger.log_dir, size_guidance={"audio": 0, "images": 0})
    events.Reload()
    assert sorted(events.Tags()["audio"]) == [
        "clip_0/decoded", "clip_0/reference", "clip_1/decoded", "clip_1/reference"
    ]
    assert sorted(events.Tags()["images"]) == [
        "clip_0/mel_reference_above_decoded", "clip_1/mel_reference_above_decoded"
    ]
    image = events.Images("clip_0/mel_reference_above_decoded")[0]
    assert image.height == 2 * 80  # reference and reconstruction, 80 mel bands each
