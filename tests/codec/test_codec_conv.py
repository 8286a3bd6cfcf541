"""Streamable convs offline: EnCodec output lengths, and the fast paths equal PyTorch's own convs."""

import pytest
import torch
import torch.nn.functional as F

from torch import nn

from codec.conv import StreamableConv1d, StreamableConvTranspose1d, unit_norm_init_
from codec.seanet import SEANetConfig, SEANetEncoder


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("length", [37, 40, 41])
def test_strided_conv_gives_ceil_frames_and_transposed_conv_rebuilds_the_length(causal, length):
    conv = StreamableConv1d(2, 3, kernel_size=8, stride=4, causal=causal, pad_mode="reflect")
    convtr = StreamableConvTranspose1d(3, 2, kernel_size=8, stride=4, causal=causal)
    frames = conv(torch.randn(1, 2, length))
    assert frames.shape[-1] == -(-length // 4)
    assert convtr(frames).shape[-1] == 4 * frames.shape[-1] >= length


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("kernel_size,stride", [(4, 2), (10, 5), (9, 3), (16, 8)])
def test_polyphase_transposed_conv_equals_conv_transpose1d(causal, kernel_size, stride):
    convtr = StreamableConvTranspose1d(6, 4, kernel_size, stride, causal=causal)
    x = torch.randn(2, 6, 11)
    reference = F.conv_transpose1d(x, convtr.convtr.weight, convtr.convtr.bias, stride=stride)  # [B, 4, 10s + k]
    overhang = kernel_size - stride
    right = overhang if causal else overhang // 2
    expected = reference[..., overhang - right : reference.shape[-1] - right]
    torch.testing.assert_close(convtr(x), expected, atol=1e-5, rtol=0)


def test_pointwise_conv_fast_path_equals_conv1d():
    conv = StreamableConv1d(5, 7, kernel_size=1)
    x = torch.randn(3, 5, 50)
    torch.testing.assert_close(conv(x), F.conv1d(x, conv.conv.weight, conv.conv.bias), atol=1e-5, rtol=0)


def test_reflect_padding_handles_signals_shorter_than_the_padding():
    conv = StreamableConv1d(1, 1, kernel_size=7, causal=False, pad_mode="reflect")
    assert conv(torch.randn(1, 1, 2)).shape == (1, 1, 2)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pad_mode"):
        StreamableConv1d(1, 1, kernel_size=3, pad_mode="circular")
    with pytest.raises(ValueError, match="multiple of stride"):
        StreamableConvTranspose1d(1, 1, kernel_size=5, stride=2, causal=True)


def _latent_signal_to_offset(unit_norm_init: bool) -> float:
    """A fresh tiny encoder on a note sequence: how much its latents vary over time relative to their constant
    offset (mean over channels of time-std / |time-mean|)."""
    torch.manual_seed(0)
    config = SEANetConfig(dimension=32, n_filters=8, ratios=(4, 4, 4, 5), lstm_layers=1, pad_mode="constant",
                          unit_norm_init=unit_norm_init)
    t = torch.arange(24000) / 24000
    pitch = 220 * 2 ** (torch.div(t, 0.25, rounding_mode="floor") / 12)  # a semitone up every 250 ms
    wav = 0.1 * torch.sin(2 * torch.pi * torch.cumsum(pitch, 0) / 24000)[None, None]
    with torch.no_grad():
        latents = SEANetEncoder(1, config)(wav)[0]  # [32, 75]
    return (latents.std(-1) / latents.mean(-1).abs()).mean().item()


def test_unit_norm_init_starts_the_encoder_with_latents_that_follow_the_input():
    # PyTorch's default init: the biases dominate and the latents are almost constant (measured ratio ~0.1-0.3);
    # unit-norm weights with zero bias keep the signal (ratio > 2). codec/conv.py unit_norm_init_ says why it matters.
    assert _latent_signal_to_offset(unit_norm_init=False) < 0.5
    assert _latent_signal_to_offset(unit_norm_init=True) > 2.0


def test_unit_norm_init_sets_every_conv_to_unit_norm_and_zero_bias():
    conv, convtr = StreamableConv1d(3, 5, kernel_size=4), StreamableConvTranspose1d(5, 3, kernel_size=4, stride=2,
                                                                                   causal=True)
    unit_norm_init_(nn.Sequential(conv, convtr))
    torch.testing.assert_close(conv.conv.weight.flatten(1).norm(dim=1), torch.ones(5))
    torch.testing.assert_close(convtr.convtr.weight.flatten(1).norm(dim=1), torch.ones(5))
    assert conv.conv.bias.abs().max() == 0 and convtr.convtr.bias.abs().max() == 0
