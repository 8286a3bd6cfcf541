"""Training the codec as a GAN: reconstruction + adversarial losses, two optimisers stepped by hand.

Per training batch (after `adversarial_start_step` batches of reconstruction-only training):
1. discriminator step: adversarial loss on real audio and on the detached reconstruction;
2. generator step: waveform L1, multi-scale mel, adversarial and feature-matching losses on the reconstruction,
   turned into one gradient for the reconstructed waveform by the balancer (or a plain weighted sum), plus the
   quantizer's commitment and codebook losses with their plain weights.

Validation logs reconstruction metrics at every bandwidth of the codec (a multi-scale SNACCodec has one: every
codebook is needed) and, for the first validation batch (keep the validation loader unshuffled so these are the
same clips every time), audio and spectrogram images to TensorBoard.
"""
from collections.abc import Mapping
from dataclasses import dataclass

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchaudio
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from codec.balancer import Balancer, BalancerConfig
from codec.codec import Codec
from codec.discriminators import Discriminator, DiscriminatorConfig
from codec.losses import (
    ADVERSARIAL_LOSSES,
    MelLossConfig,
    MultiScaleMelLoss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from codec.snac import SNACCodec
from eval.audio_metrics import si_sdr
from eval.pitch import chroma_cosine
from lit.callbacks import completed_batches

OUTPUT_LOSSES = ("waveform_l1", "mel", "adversarial", "feature_matching")  # losses computed from the decoded wav


@dataclass
class CodecLossWeights:
    waveform_l1: float
    mel: float
    adversarial: float
    feature_matching: float
    commitment: float
    codebook: float


@dataclass
class CodecOptimizerConfig:
    """AdamW for the codec and the discriminator alike."""

    lr: float
    betas: tuple[float, float]
    weight_decay: float
    lr_decay: float                        # ExponentialLR gamma, applied after every training batch
    generator_grad_clip: float | None      # max gradient norm, None: no clipping
    discriminator_grad_clip: float | None


@dataclass
class CodecLossConfig:
    """Maps one-to-one onto configs/codec_loss/*.yaml: `CodecLossConfig(**cfg.codec_loss)`."""

    weights: CodecLossWeights
    adversarial_loss: str                  # one of ADVERSARIAL_LOSSES
    adversarial_start_step: int            # training batches before the discriminator and GAN losses start
    mel: MelLossConfig
    balancer: BalancerConfig
    discriminator: DiscriminatorConfig
    optimizer: CodecOptimizerConfig

    def __post_init__(self) -> None:
        # Hydra gives plain mappings for the nested parts.
        for name, kind in (
            ("weights", CodecLossWeights),
            ("mel", MelLossConfig),
            ("balancer", BalancerConfig),
            ("discriminator", DiscriminatorConfig),
            ("optimizer", CodecOptimizerConfig),
        ):
            if isinstance(getattr(self, name), Mapping):
                setattr(self, name, kind(**getattr(self, name)))
        self.optimizer.betas = tuple(self.optimizer.betas)
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(f"adversarial_loss must be one of {ADVERSARIAL_LOSSES}, got {self.adversarial_loss!r}")
        if self.adversarial_start_step < 0:
            raise ValueError(f"adversarial_start_step must be >= 0, got {self.adversarial_start_step}")
        if self.weights.waveform_l1 <= 0 and self.weights.mel <= 0:
            raise ValueError("weights.waveform_l1 or weights.mel must be > 0: the codec needs a reconstruction loss")


class CodecModule(pl.LightningModule):
    def __init__(self, codec: Codec | SNACCodec, loss: CodecLossConfig, logged_clips: int = 4):
        """codec: the model to train; loss: losses, discriminators and optimiser; logged_clips: how many clips
        of the first validation batch go to TensorBoard as audio and spectrograms."""
        super().__init__()
        self.automatic_optimization = False
        self.codec = codec
        self.config = loss
        self.logged_clips = logged_clips
        self.discriminator = Discriminator(loss.discriminator, audio_channels=codec.channels)
        self.mel_loss = MultiScaleMelLoss(codec.sample_rate, loss.mel)
        self.balancer = Balancer({name: getattr(loss.weights, name) for name in OUTPUT_LOSSES}, loss.balancer)

    def configure_optimizers(self):
        optim = self.config.optimizer
        optimizers = [
            torch.optim.AdamW(module.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
            for module in (self.codec, self.discriminator)
        ]
        schedulers = [
            torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=optim.lr_decay) for optimizer in optimizers
        ]
        return optimizers, schedulers

    def training_step(self, batch: Tensor | Mapping[str, Tensor], batch_idx: int) -> None:
        wav = _batch_wav(batch)  # [B, C, T]
        config = self.config
        generator_optimizer, _ = self.optimizers()
        generator_scheduler, discriminator_scheduler = self.lr_schedulers()
        adversarial = completed_batches(self.trainer) >= config.adversarial_start_step

        output = self.codec(wav)
        reconstruction = output.wav  # [B, C, T]
        logs = self._discriminator_step(wav, reconstruction.detach()) if adversarial else {}

        losses = self._generator_losses(wav, reconstruction, adversarial)
        weighted = {name: loss for name, loss in losses.items() if getattr(config.weights, name) > 0}
        gradient, balancer_norms = self.balancer(weighted, reconstruction)
        quantizer_loss = config.weights.commitment * output.commit_loss + config.weights.codebook * output.codebook_loss
        generator_optimizer.zero_grad()
        # (reconstruction * gradient).sum() back-propagates exactly `gradient` from the reconstruction.
        self.manual_backward(quantizer_loss + (reconstruction * gradient).sum())
        logs["grad_norm/generator"] = _clip(self.codec, config.optimizer.generator_grad_clip)
        generator_optimizer.step()
        generator_scheduler.step()
        if adversarial:
            discriminator_scheduler.step()

        logs.update({f"train/{name}": loss.detach() for name, loss in losses.items()})
        logs["train/commitment"] = output.commit_loss.detach()
        logs["train/codebook"] = output.codebook_loss.detach()
        logs.update({f"grad_norm/balancer_{name}": norm for name, norm in balancer_norms.items()})
        logs.update({f"quantizer/{name}": value for name, value in self.codec.quantizer_stats().items()})
        self.log_dict(logs, batch_size=wav.shape[0])

    def _discriminator_step(self, wav: Tensor, reconstruction: Tensor) -> dict[str, Tensor]:
        """One optimiser step of the discriminator on real `wav` and detached `reconstruction` [B, C, T]."""
        _, discriminator_optimizer = self.optimizers()
        real_scores, fake_scores = self.discriminator(wav), self.discriminator(reconstruction)
        loss = discriminator_adversarial_loss(
            real_logits=[score.logits for score in real_scores],
            fake_logits=[score.logits for score in fake_scores],
            kind=self.config.adversarial_loss,
        )
        discriminator_optimizer.zero_grad()
        self.manual_backward(loss)
        grad_norm = _clip(self.discriminator, self.config.optimizer.discriminator_grad_clip)
        discriminator_optimizer.step()
        return {"train/discriminator_loss": loss.detach(), "grad_norm/discriminator": grad_norm}

    def _generator_losses(self, wav: Tensor, reconstruction: Tensor, adversarial: bool) -> dict[str, Tensor]:
        """The losses of OUTPUT_LOSSES (adversarial ones only when `adversarial`), as scalars."""
        losses = {"waveform_l1": F.l1_loss(reconstruction, wav), "mel": self.mel_loss(reconstruction, wav)}
        if not adversarial:
            return losses
        self.discriminator.requires_grad_(False)  # its gradients would only be discarded
        with torch.no_grad():
            real_scores = self.discriminator(wav)
        fake_scores = self.discriminator(reconstruction)
        self.discriminator.requires_grad_(True)
        losses["adversarial"] = generator_adversarial_loss(
            [score.logits for score in fake_scores], self.config.adversarial_loss
        )
        losses["feature_matching"] = feature_matching_loss(
            [score.features for score in real_scores], [score.features for score in fake_scores]
        )
        return losses

    def validation_step(self, batch: Tensor | Mapping[str, Tensor], batch_idx: int) -> None:
        wav = _batch_wav(batch)  # [B, C, T]
        T = wav.shape[-1]
        reconstruction = self.codec(wav).wav
        logs = {
            "val/mel": self.mel_loss(reconstruction, wav),
            "val/waveform_l1": F.l1_loss(reconstruction, wav),
            "val/si_sdr": si_sdr(reconstruction, wav).mean(),
            "val/chroma_cosine": chroma_cosine(reconstruction, wav, self.codec.sample_rate).nanmean(),
        }
        for kbps in getattr(self.codec.config, "bandwidths", ()):  # SNACConfig has none: the metrics above
            codes = self.codec.encode(wav, self.codec.bandwidth_to_num_codebooks(kbps))  # [B, K', F]
            decoded = self.codec.decode(codes)[..., :T]
            logs[f"val/mel_{kbps:g}kbps"] = self.mel_loss(decoded, wav)
            logs[f"val/si_sdr_{kbps:g}kbps"] = si_sdr(decoded, wav).mean()
            logs[f"val/chroma_cosine_{kbps:g}kbps"] = chroma_cosine(decoded, wav, self.codec.sample_rate).nanmean()
        self.log_dict(logs, prog_bar=False, batch_size=wav.shape[0])
        if batch_idx == 0:
            self._log_clips(wav[: self.logged_clips], reconstruction[: self.logged_clips])

    def _log_clips(self, wav: Tensor, reconstruction: Tensor) -> None:
        """Audio (channels mixed to mono) and log-mel images, reference above reconstruction."""
        loggers = [logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        sample_rate = self.codec.sample_rate
        mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80).to(wav.device)
        for index, (clip, decoded) in enumerate(zip(wav, reconstruction)):
            image = torch.cat([_spectrogram_image(mel, clip), _spectrogram_image(mel, decoded)], dim=-2)  # [1, 2M, N]
            for logger in loggers:
                experiment = logger.experiment
                experiment.add_audio(f"clip_{index}/reference", clip.mean(0).cpu(), self.global_step, sample_rate)
                experiment.add_audio(f"clip_{index}/decoded", decoded.mean(0).cpu(), self.global_step, sample_rate)
                experiment.add_image(f"clip_{index}/mel_reference_above_decoded", image.cpu(), self.global_step)


def _batch_wav(batch: Tensor | Mapping[str, Tensor]) -> Tensor:
    wav = batch["wav"] if isinstance(batch, Mapping) else batch
    if wav.dim() != 3:
        raise ValueError(
            f"a codec batch must be a wav [B, C, T] or a dict with key 'wav', got shape {tuple(wav.shape)}"
        )
    return wav


def _clip(module: torch.nn.Module, max_norm: float | None) -> Tensor:
    """Clips the module's gradients to `max_norm` (None: no clipping); returns their norm before clipping."""
    parameters = [p for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm is not None else float("inf"))


def _spectrogram_image(mel: torchaudio.transforms.MelSpectrogram, clip: Tensor) -> Tensor:
    """clip [C, T] -> [1, n_mels, frames]: log-mel scaled to [0, 1] over an 80 dB range, low frequencies at the
    bottom."""
    decibels = 10 * torch.log10(mel(clip.mean(0)).clamp(min=1e-10))
    image = ((decibels - decibels.max() + 80) / 80).clamp(0, 1)
    return image.flip(0).unsqueeze(0)
