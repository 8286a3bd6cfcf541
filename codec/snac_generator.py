"""SNAC's encoder and decoder (Siuzdak et al. 2024): DAC's generator with depthwise residual convs, noise blocks
and optional local windowed attention. Non-causal, zero padding; whole signals only (no streaming).

Encoder [B, C, T] -> [B, D, T / hop], D = width * 2 ** len(rates), hop = prod(rates):

    conv(7) C -> width
    for each rate r, width w doubling: 3 residual units (w), Snake, conv(2r, stride r) w -> 2w
    local attention (optional), conv(7) D -> D (depthwise when `depthwise`)          <- no activation before it

Decoder [B, D, F] -> [B, C, F * hop], widths halving from `width`:

    depthwise conv(7) D -> D then conv(1) D -> width (one conv(7) D -> width when not `depthwise`)
    local attention (optional)
    for each rate r: Snake, transposed conv(2r, stride r) w -> w / 2, noise block (optional), 3 residual units
    Snake, conv(7) -> C, tanh

What differs from DAC (codec/seanet.py with padding_convention "dac"):
- Residual units: Snake, conv(7, dilation 1 / 3 / 9) with groups = width when `depthwise`, Snake, conv(1).
- Noise block after each up-sampling: x + conv1x1(x) * n, n ~ N(0, 1) of shape [B, 1, T] drawn from torch's
  global generator, in training and in inference alike, so decoding is random unless the seed is fixed.
- Transposed convs return exactly F * stride samples, odd strides included (SNAC's `output_padding`), which is
  EnCodec's non-causal trimming (codec/conv.py, padding_convention "encodec").
The input length must be a multiple of hop (SNACCodec pads it).
"""

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from codec.conv import StreamableConv1d, StreamableConvTranspose1d
from codec.local_attention import LocalWindowAttention
from codec.seanet import Snake

KERNEL_SIZE = 7  # every non-strided conv of SNAC but the 1x1 ones
RESIDUAL_DILATIONS = (1, 3, 9)  # three residual units per resolution, as DAC


def same_conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, groups: int = 1,
              bias: bool = True) -> nn.Conv1d:
    """Weight-normed Conv1d with zero padding that keeps the length (odd kernel). [B, C_in, T] -> [B, C_out, T]"""
    padding = (kernel_size - 1) * dilation // 2
    return weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding,
                                 groups=groups, bias=bias))


class ResidualUnit(nn.Module):
    """x + conv1x1(Snake(conv(Snake(x), dilation, groups))). [B, C, T] -> [B, C, T]"""

    def __init__(self, channels: int, dilation: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            same_conv(channels, channels, KERNEL_SIZE, dilation=dilation, groups=groups),
            Snake(channels),
            same_conv(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def residual_units(channels: int, depthwise: bool) -> nn.Sequential:
    groups = channels if depthwise else 1
    return nn.Sequential(*[ResidualUnit(channels, dilation, groups) for dilation in RESIDUAL_DILATIONS])


class NoiseBlock(nn.Module):
    """x + conv1x1(x) * n, one standard normal n per item and time step, shared by the channels. [B, C, T]"""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = same_conv(channels, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, C, T = x.shape
        noise = torch.randn((B, 1, T), device=x.device, dtype=x.dtype)
        return x + self.scale(x) * noise


class EncoderBlock(nn.Module):
    """Residual units at `in_channels`, then down-sampling by `stride`. [B, C_in, T] -> [B, C_out, T / stride]"""

    def __init__(self, in_channels: int, out_channels: int, stride: int, depthwise: bool) -> None:
        super().__init__()
        self.residual_units = residual_units(in_channels, depthwise)
        self.activation = Snake(in_channels)
        # With T a multiple of stride, EnCodec's split zero padding is SNAC's padding=ceil(stride / 2).
        self.downsample = StreamableConv1d(in_channels, out_channels, 2 * stride, stride=stride, pad_mode="constant")

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.activation(self.residual_units(x)))


class DecoderBlock(nn.Module):
    """Up-sampling by `stride`, optional noise, residual units. [B, C_in, F] -> [B, C_out, F * stride]"""

    def __init__(self, in_channels: int, out_channels: int, stride: int, noise: bool, depthwise: bool) -> None:
        super().__init__()
        self.activation = Snake(in_channels)
        self.upsample = StreamableConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, causal=False)
        self.noise = NoiseBlock(out_channels) if noise else None
        self.residual_units = residual_units(out_channels, depthwise)

    def forward(self, x: Tensor) -> Tensor:
        x = self.upsample(self.activation(x))
        if self.noise is not None:
            x = self.noise(x)
        return self.residual_units(x)


def _attention(dim: int, window_size: int | None, head_dim: int) -> LocalWindowAttention | None:
    return None if window_size is None else LocalWindowAttention(dim, window_size, head_dim)


class SNACEncoder(nn.Module):
    """wav [B, C, T] -> latents [B, width * 2 ** len(rates), T / prod(rates)]"""

    def __init__(self, channels: int, width: int, rates: tuple[int, ...], depthwise: bool,
                 attention_window: int | None, attention_head_dim: int) -> None:
        super().__init__()
        self.input_conv = same_conv(channels, width, KERNEL_SIZE)
        blocks = []
        for rate in rates:
            blocks.append(EncoderBlock(width, 2 * width, rate, depthwise))
            width *= 2
        self.blocks = nn.Sequential(*blocks)
        self.attention = _attention(width, attention_window, attention_head_dim)
        self.output_conv = same_conv(width, width, KERNEL_SIZE, groups=width if depthwise else 1)

    def forward(self, wav: Tensor) -> Tensor:
        x = self.blocks(self.input_conv(wav))
        if self.attention is not None:
            x = self.attention(x)
        return self.output_conv(x)


class SNACDecoder(nn.Module):
    """latents [B, D, F] -> wav [B, C, F * prod(rates)]; widths halve from `width` at each up-sampling."""

    def __init__(self, channels: int, latent_dim: int, width: int, rates: tuple[int, ...], noise: bool,
                 depthwise: bool, attention_window: int | None, attention_head_dim: int) -> None:
        super().__init__()
        if width % 2 ** len(rates):
            raise ValueError(f"decoder width {width} must halve evenly {len(rates)} times (a multiple of "
                             f"{2 ** len(rates)})")
        if depthwise:
            self.input_convs = nn.Sequential(
                same_conv(latent_dim, latent_dim, KERNEL_SIZE, groups=latent_dim), same_conv(latent_dim, width, 1)
            )
        else:
            self.input_convs = nn.Sequential(same_conv(latent_dim, width, KERNEL_SIZE))
        self.attention = _attention(width, attention_window, attention_head_dim)
        blocks = []
        for rate in rates:
            blocks.append(DecoderBlock(width, width // 2, rate, noise, depthwise))
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.output_activation = Snake(width)
        self.output_conv = same_conv(width, channels, KERNEL_SIZE)

    def forward(self, latents: Tensor) -> Tensor:
        x = self.input_convs(latents)
        if self.attention is not None:
            x = self.attention(x)
        x = self.blocks(x)
        return torch.tanh(self.output_conv(self.output_activation(x)))
