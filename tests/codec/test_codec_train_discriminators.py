import pytest
import torch

from codec.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    MultiBandSTFTDiscriminatorConfig,
    PeriodDiscriminatorConfig,
    STFTDiscriminatorConfig,
)

STFT = STFTDiscriminatorConfig(n_ffts=[128, 256], channels=4)
PERIOD = PeriodDiscriminatorConfig(periods=[2, 3, 5], channels=[4, 8])
MULTIBAND = MultiBandSTFTDiscriminatorConfig(n_ffts=[256, 128], band_edges=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0], channels=4)

FAMILIES = {
    "stft": DiscriminatorConfig(stft=STFT),
    "period": DiscriminatorConfig(period=PERIOD),
    "multiband_stft": DiscriminatorConfig(multiband_stft=MULTIBAND, normalize_input=True),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_discriminator_scores_inputs_differently_and_passes_gradients(family):
    discriminator = Discriminator(FAMILIES[family], audio_channels=1)
    t = torch.arange(2048) / 16_000
    tone = (0.5 * torch.sin(2 * torch.pi * 440 * t)).reshape(1, 1, -1)
    noise = (0.5 * torch.randn(1, 1, 2048)).requires_grad_()
    tone_outputs, noise_outputs = discriminator(tone), discriminator(noise)
    for tone_output, noise_output in zip(tone_outputs, noise_outputs):
        assert not torch.allclose(tone_output.logits, noise_output.logits)
        assert len(noise_output.features) >= 3
    sum(output.logits.sum() for output in noise_outputs).backward()
    assert noise.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())


def test_families_combine_into_one_list_of_sub_discriminators():
    config = DiscriminatorConfig(stft=STFT, period=PERIOD, multiband_stft=MULTIBAND)
    outputs = Discriminator(config, audio_channels=2)(torch.randn(2, 2, 1024))
    assert len(outputs) == len(STFT.n_ffts) + len(PERIOD.periods) + len(MULTIBAND.n_ffts)
    assert all(output.logits.shape[0] == 2 for output in outputs)


def test_period_discriminator_sees_only_samples_one_period_apart():
    # Kernels run along the folded time axis only, so an impulse at sample s only reaches column s mod p.
    discriminator = Discriminator(DiscriminatorConfig(period=PeriodDiscriminatorConfig([3], [4, 8])), audio_channels=1)
    wav = torch.zeros(1, 1, 300, requires_grad=True)
    logits = discriminator(wav)[0].logits  # [1, 1, frames, 3]
    logits[..., 1].sum().backward()
    columns_touched = (wav.grad[0, 0].abs() > 0).nonzero().flatten() % 3
    assert set(columns_touched.tolist()) == {1}


def test_discriminator_refuses_empty_config():
    with pytest.raises(ValueError, match="enables no discriminator"):
        Discriminator(DiscriminatorConfig(), audio_channels=1)
    with pytest.raises(ValueError, match="band_edges"):
        Discriminator(DiscriminatorConfig(multiband_stft=MultiBandSTFTDiscriminatorConfig([256], [0.0, 0.5], 4)), 1)
