"""configs/codec_loss/*.yaml compose into CodecLossConfig and build the discriminators and losses they name."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from codec.balancer import Balancer
from codec.discriminators import Discriminator
from codec.losses import MultiScaleMelLoss
from lit.codec_module import OUTPUT_LOSSES, CodecLossConfig

PRESETS = Path(__file__).parents[2] / "configs" / "codec_loss"


def _load(name: str) -> CodecLossConfig:
    return CodecLossConfig(**OmegaConf.to_container(OmegaConf.load(PRESETS / f"{name}.yaml")))


@pytest.mark.parametrize(
    "name, sub_discriminators, balanced",
    [("encodec", 5, True), ("dac", 5 + 3, False), ("tiny", 1 + 2, False)],
)
def test_preset_builds_its_discriminators_mel_loss_and_balancer(name, sub_discriminators, balanced):
    config = _load(name)
    discriminator = Discriminator(config.discriminator, audio_channels=1)
    assert len(discriminator.subs) == sub_discriminators
    assert config.balancer.enabled is balanced
    mel = MultiScaleMelLoss(24_000, config.mel)
    wav = 0.1 * torch.randn(1, 1, 4096)
    assert mel(wav, wav).item() == 0.0 and mel(0.5 * wav, wav).item() > 0
    Balancer({loss: getattr(config.weights, loss) for loss in OUTPUT_LOSSES}, config.balancer)


def test_presets_carry_the_published_recipes():
    encodec, dac = _load("encodec"), _load("dac")
    # AudioCraft compression defaults (REFERENCE.md section 5).
    assert (encodec.weights.adversarial, encodec.weights.feature_matching, encodec.weights.waveform_l1,
            encodec.weights.mel) == (4.0, 4.0, 0.1, 2.0)
    assert encodec.discriminator.stft.n_ffts == [1024, 2048, 512, 256, 128] and encodec.adversarial_loss == "hinge"
    assert (encodec.balancer.total_norm, encodec.balancer.ema_decay) == (1.0, 0.999)
    assert (encodec.optimizer.lr, encodec.optimizer.betas) == (3e-4, (0.5, 0.9))
    # DAC (REFERENCE.md section 1.3).
    assert (dac.weights.mel, dac.weights.feature_matching, dac.weights.adversarial, dac.weights.commitment,
            dac.weights.codebook) == (15.0, 2.0, 1.0, 0.25, 1.0)
    assert dac.mel.window_lengths == [32, 64, 128, 256, 512, 1024, 2048]
    assert dac.mel.n_mels == [5, 10, 20, 40, 80, 160, 320]
    assert dac.discriminator.period.periods == [2, 3, 5, 7, 11]
    assert dac.discriminator.multiband_stft.n_ffts == [2048, 1024, 512]
    assert (dac.optimizer.lr, dac.optimizer.betas, dac.optimizer.lr_decay) == (1e-4, (0.8, 0.99), 0.999996)


def test_loss_config_refuses_unknown_adversarial_loss_and_no_reconstruction_loss():
    config = OmegaConf.to_container(OmegaConf.load(PRESETS / "tiny.yaml"))
    with pytest.raises(ValueError, match="adversarial_loss"):
        CodecLossConfig(**{**config, "adversarial_loss": "wgan"})
    no_reconstruction = {**config["weights"], "waveform_l1": 0.0, "mel": 0.0}
    with pytest.raises(ValueError, match="reconstruction loss"):
        CodecLossConfig(**{**config, "weights": no_reconstruction})
