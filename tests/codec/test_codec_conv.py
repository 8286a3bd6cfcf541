"""Streamable convs offline: EnCodec output lengths, and the fast paths equal PyTorch's own convs."""

import pytest
import torch
import torch.nn.functional as F

from codec.conv import StreamableConv1d, StreamableConvTranspose1d


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
