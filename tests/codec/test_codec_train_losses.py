import pytest
import torch

from codec.losses import (
    MelLossConfig,
    MultiScaleMelLoss,
    discriminator_adversarial_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)

SAMPLE_RATE = 16_000


def _harmonic(seconds: float = 0.25) -> torch.Tensor:
    t = torch.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wav = sum(0.3 / k * torch.sin(2 * torch.pi * 220 * k * t) for k in range(1, 5))
    return wav.reshape(1, 1, -1).repeat(2, 1, 1)


@pytest.mark.parametrize(
    "config",
    [
        # DAC: 7 scales down to a 32-sample window, L1 on log-mel.
        MelLossConfig([32, 64, 128, 256, 512, 1024, 2048], [5, 10, 20, 40, 80, 160, 320], 0.0, 1.0, 0.0),
        # EnCodec style: L1 on mel + L2 on log-mel.
        MelLossConfig([64, 128, 256], [8, 12, 16], 1.0, 0.0, 1.0),
    ],
)
def test_mel_loss_is_zero_for_identical_audio_and_grows_with_noise(config):
    loss = MultiScaleMelLoss(SAMPLE_RATE, config)
    wav = _harmonic()
    noise = torch.randn_like(wav)
    assert loss(wav, wav.clone()).item() == 0.0
    losses = [loss(wav + level * noise, wav).item() for level in (0.001, 0.01, 0.1, 0.5)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses
    assert losses[0] > 0


def test_mel_loss_terms_match_their_formulas():
    config = MelLossConfig([64], [8], linear_l1_weight=0.0, log_l1_weight=0.0, log_l2_weight=1.0)
    loss = MultiScaleMelLoss(SAMPLE_RATE, config)
    wav, other = _harmonic(), 0.5 * _harmonic()
    # Halving the amplitude halves the mel magnitude (power 1): log10 differs by log10(2) wherever mel > floor.
    expected = torch.log10(torch.tensor(2.0)) ** 2
    assert loss(other, wav).item() == pytest.approx(expected.item(), rel=0.05)


def test_mel_loss_refuses_mismatched_scales():
    with pytest.raises(ValueError, match="n_mels"):
        MultiScaleMelLoss(SAMPLE_RATE, MelLossConfig([64, 128], [8], 1.0, 0.0, 0.0))


def test_hinge_losses_match_formula_on_known_values():
    real = [torch.tensor([2.0, 0.5, -1.0]), torch.tensor([1.0])]
    fake = [torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([0.0])]
    # Sub-discriminator 1: mean(relu(1 - real)) = (0 + .5 + 2)/3, mean(relu(1 + fake)) = (0 + 1 + 2)/3.
    # Sub-discriminator 2: relu(1 - 1) + relu(1 + 0) = 1.
    expected_d = ((2.5 / 3 + 3 / 3) + 1.0) / 2
    assert discriminator_adversarial_loss(real, fake, "hinge").item() == pytest.approx(expected_d)
    # Generator: mean(relu(1 - fake)) = (3 + 1 + 0)/3 and 1.
    assert generator_adversarial_loss(fake, "hinge").item() == pytest.approx((4 / 3 + 1.0) / 2)


def test_least_squares_losses_match_formula_on_known_values():
    real = [torch.tensor([2.0, 0.5])]
    fake = [torch.tensor([-1.0, 0.5])]
    # mean((real - 1)^2) = (1 + .25)/2, mean(fake^2) = (1 + .25)/2.
    assert discriminator_adversarial_loss(real, fake, "least_squares").item() == pytest.approx(1.25)
    # mean((fake - 1)^2) = (4 + .25)/2.
    assert generator_adversarial_loss(fake, "least_squares").item() == pytest.approx(2.125)
    with pytest.raises(ValueError, match="adversarial loss kind"):
        generator_adversarial_loss(fake, "wasserstein")


def test_feature_matching_is_zero_for_identical_features_and_l1_otherwise():
    features = [[torch.randn(2, 4, 5), torch.randn(2, 3)], [torch.randn(2, 7)]]
    assert feature_matching_loss(features, [[f.clone() for f in fs] for fs in features]).item() == 0.0
    shifted = [[f + 0.5 for f in fs] for fs in features]
    assert feature_matching_loss(features, shifted).item() == pytest.approx(0.5)
    # Real features are targets: only the fake side receives gradient.
    real = torch.randn(3, requires_grad=True)
    fake = torch.randn(3, requires_grad=True)
    feature_matching_loss([[real]], [[fake]]).backward()
    assert real.grad is None and fake.grad.abs().sum() > 0
