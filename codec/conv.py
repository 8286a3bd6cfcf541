"""Weight-normed Conv1d / ConvTranspose1d that keep the output length right, offline and streaming.

Padding follows EnCodec (Defossez et al. 2022): a conv with kernel k, stride s, dilation d pads
`padding_total = (k - 1) * d + 1 - s` samples, all on the left when causal, split (right half rounded down)
otherwise, plus `extra_padding` zeros at the end so that the last window is full: a signal of length T gives
ceil(T / s) frames, and the matching transposed conv rebuilds at least T samples. With T a multiple of s the
extra padding is zero.

Streaming (causal only): the padding on the left is replaced by the last `padding_total` inputs of the
previous chunk (a constant- or replicate-padded start on the first chunk), so chunked outputs equal the
offline output. A transposed conv keeps the `kernel - stride` overlapping output samples of its last chunk
and adds them to the start of the next. Streaming is for inference: weights are read when the stream starts.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from codec.streaming import StreamingModule

PadMode = Literal["constant", "reflect", "replicate"]
PAD_MODES = ("constant", "reflect", "replicate")
# Where a non-causal transposed conv trims its `kernel - stride` overhang: "encodec" splits it (larger half on the
# left), "dac" trims the larger half on both sides as DAC's `padding=ceil(stride / 2)` does, so an odd stride
# gives one sample less than F * stride.
PaddingConvention = Literal["encodec", "dac"]
PADDING_CONVENTIONS = ("encodec", "dac")


def extra_padding_for_conv1d(length: int, kernel_size: int, stride: int, padding_total: int) -> int:
    """Zeros to append so that the last conv window is full (EnCodec's `get_extra_padding_for_conv1d`)."""
    num_frames = math.ceil((length - kernel_size + padding_total) / stride) + 1
    ideal_length = (num_frames - 1) * stride + kernel_size - padding_total
    return ideal_length - length


def pad1d(x: Tensor, left: int, right: int, mode: PadMode) -> Tensor:
    """F.pad that also reflect-pads signals shorter than the padding (zeros are appended first)."""
    if mode != "reflect":
        return F.pad(x, (left, right), mode=mode)
    length = x.shape[-1]
    short_by = max(left, right) - length + 1
    if short_by <= 0:
        return F.pad(x, (left, right), mode="reflect")
    padded = F.pad(F.pad(x, (0, short_by)), (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - short_by]


@dataclass
class ConvState:
    previous: Tensor  # [B, C_in, padding_total] last inputs: the left context of the next chunk
    first_chunk: bool


class StreamableConv1d(StreamingModule[ConvState]):
    """Conv1d with weight norm, EnCodec padding and a causal streaming mode. [B, C_in, T] -> [B, C_out, T']"""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        pad_mode: PadMode = "reflect",
    ) -> None:
        super().__init__()
        if pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation))
        self.kernel_size = kernel_size
        self.stride = stride
        self.effective_kernel_size = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel_size - stride
        self.causal = causal
        self.pad_mode = pad_mode

    def forward(self, x: Tensor) -> Tensor:
        if self.is_streaming:
            return self._forward_streaming(x)
        extra = extra_padding_for_conv1d(x.shape[-1], self.effective_kernel_size, self.stride, self.padding_total)
        if self.causal:
            left, right = self.padding_total, extra
        else:
            left, right = self.padding_total - self.padding_total // 2, self.padding_total // 2 + extra
        if left or right:
            x = pad1d(x, left, right, self.pad_mode)
        return self._conv(x)

    def _conv(self, x: Tensor) -> Tensor:
        if self.kernel_size == 1 and self.stride == 1:
            # A 1x1 conv is a matmul; PyTorch's CPU conv sends it down a slower im2col path.
            return torch.baddbmm(self.conv.bias[:, None], self.conv.weight[..., 0].expand(x.shape[0], -1, -1), x)
        return self.conv(x)

    def init_streaming_state(self, batch_size: int) -> ConvState:
        if not self.causal:
            raise ValueError("streaming needs causal=True: a non-causal conv looks ahead of the chunk")
        if self.pad_mode == "reflect":
            raise ValueError("streaming needs pad_mode 'constant' or 'replicate': reflect padding reads ahead")
        bias = self.conv.bias
        previous = bias.new_zeros(batch_size, self.conv.in_channels, self.padding_total)
        return ConvState(previous=previous, first_chunk=True)

    def _forward_streaming(self, x: Tensor) -> Tensor:
        state = self.streaming_state
        B, C, T = x.shape
        if B != state.previous.shape[0]:
            raise ValueError(f"streaming batch size is {state.previous.shape[0]}, got a chunk of batch {B}")
        if T == 0 or T % self.stride:
            raise ValueError(f"streaming chunk length must be a positive multiple of stride {self.stride}, got {T}")
        if state.first_chunk and self.pad_mode == "replicate":
            state.previous = x[..., :1].expand(-1, -1, self.padding_total)
        state.first_chunk = False
        x = torch.cat([state.previous, x], dim=-1)
        state.previous = x[..., x.shape[-1] - self.padding_total :]
        return self._conv(x)  # [B, C_out, T / stride]


@dataclass
class ConvTransposeState:
    weight: Tensor  # [C_out * stride, C_in, kernel / stride] polyphase weight, fixed for the stream
    partial: Tensor  # [B, C_out, kernel - stride] overlap of the last chunk's output, without bias


class StreamableConvTranspose1d(StreamingModule[ConvTransposeState]):
    """ConvTranspose1d with weight norm, EnCodec trimming and a causal streaming mode.

    [B, C_in, F] -> [B, C_out, F * stride]: the `kernel - stride` overhanging samples are trimmed on the right
    when causal (they are completed by the next frames), split otherwise; with padding_convention "dac" the larger
    half is trimmed on both sides ([B, C_out, F * stride - stride % 2] when kernel = 2 * stride, as in DAC).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, causal: bool,
                 padding_convention: PaddingConvention = "encodec") -> None:
        super().__init__()
        if padding_convention not in PADDING_CONVENTIONS:
            raise ValueError(f"padding_convention must be one of {PADDING_CONVENTIONS}, got {padding_convention!r}")
        if causal and padding_convention != "encodec":
            raise ValueError(f"padding_convention {padding_convention!r} is non-causal: causal needs 'encodec'")
        if kernel_size % stride:
            raise ValueError(f"kernel_size ({kernel_size}) must be a multiple of stride ({stride})")
        self.convtr = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride))
        self.stride = stride
        self.taps = kernel_size // stride
        self.padding_total = kernel_size - stride
        self.causal = causal
        self.padding_convention = padding_convention

    def _polyphase_weight(self) -> Tensor:
        """[C_out * stride, C_in, taps]: output phase p of output channel c is channel c * stride + p."""
        return rearrange(self.convtr.weight, "ci co (j s) -> (co s) ci j", s=self.stride).flip(-1)

    def _transposed_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """[B, C_in, F] -> [B, C_out, (F - 1) * stride + kernel], the untrimmed output, without bias.

        Computed as `stride` interleaved ordinary convs (polyphase): output sample n * stride + p is
        sum_j x[n - j] * weight[:, :, p + j * stride], a conv with `taps` = kernel / stride taps. This is the
        same sum as conv_transpose1d, which PyTorch's CPU kernels run ~1.5x slower.
        """
        phases = F.conv1d(F.pad(x, (self.taps - 1, self.taps - 1)), weight)  # [B, C_out * stride, F + taps - 1]
        return rearrange(phases, "b (co s) n -> b co (n s)", s=self.stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.is_streaming:
            return self._forward_streaming(x)
        y = self._transposed_conv(x, self._polyphase_weight()) + self.convtr.bias[:, None]
        right = self.padding_total if self.causal else self.padding_total // 2
        left = self.padding_total - right
        if self.padding_convention == "dac":
            right = left
        return y[..., left : y.shape[-1] - right]

    def init_streaming_state(self, batch_size: int) -> ConvTransposeState:
        if not self.causal:
            raise ValueError("streaming needs causal=True: a non-causal transposed conv trims future samples")
        bias = self.convtr.bias
        return ConvTransposeState(
            weight=self._polyphase_weight().detach(),
            partial=bias.new_zeros(batch_size, self.convtr.out_channels, self.padding_total),
        )

    def _forward_streaming(self, x: Tensor) -> Tensor:
        state = self.streaming_state
        if x.shape[0] != state.partial.shape[0]:
            raise ValueError(f"streaming batch size is {state.partial.shape[0]}, got a chunk of batch {x.shape[0]}")
        # Bias is added once per output sample, so the overlap carried to the next chunk is kept without it.
        y = self._transposed_conv(x, state.weight)  # [B, C_out, F * stride + overlap]
        y[..., : self.padding_total] += state.partial
        num_samples = x.shape[-1] * self.stride
        state.partial = y[..., num_samples:]
        return y[..., :num_samples] + self.convtr.bias[:, None]


def unit_norm_init_(module: nn.Module) -> None:
    """Start every streamable conv in `module` at unit weight norm (per weight-norm slice) and zero bias.

    PyTorch's default conv init shrinks the signal at each layer while its biases (up to 1/sqrt(fan_in), 0.38 for
    the first conv) do not, so a fresh SEANet encoder's latents are ~10x more bias than signal and training first
    spends hundreds of steps undoing that (measured on the tiny codec: mel loss 1.39 vs 0.95 after 400 steps).
    Unit norm keeps the per-layer output level near the input level.
    """
    for layer in module.modules():
        if isinstance(layer, StreamableConv1d):
            conv = layer.conv
        elif isinstance(layer, StreamableConvTranspose1d):
            conv = layer.convtr
        else:
            continue
        with torch.no_grad():
            conv.parametrizations.weight.original0.fill_(1.0)  # weight norm's magnitude g
            conv.bias.zero_()
