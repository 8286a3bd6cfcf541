"""SEANet encoder / decoder as in EnCodec (Defossez et al. 2022, Fig. 1), with DAC's Snake as an option.

Encoder [B, C, T] -> [B, D, F], F = ceil(T / hop_length), hop_length = prod(ratios):

    conv(kernel_size) C -> n_filters
    for each ratio r (in reverse order), width w doubling: residual units, act, conv(2r, stride r) w -> 2w
    LSTM (optional, with skip), act, conv(encoder_last_kernel_size, else last_kernel_size) -> D

The decoder mirrors it with transposed convs (ratios in the given order) and returns [B, C, F * hop_length];
its widths halve from decoder_n_filters * 2 ** len(ratios) (n_filters unless set, DAC's start at 1536).
With `causal=True` every layer is causal and both run chunk by chunk under `streaming()`.

padding_convention "dac" computes what DAC's generator computes (Kumar et al. 2023): the encoder first pads the
input with zeros to a whole number of frames (DAC's `preprocess`), after which EnCodec's split padding equals
DAC's `padding=ceil(stride / 2)`; each transposed conv trims ceil(stride / 2) on both sides, so an odd stride
loses one sample, and the decoder fills the missing samples at the end with zeros to keep F * hop_length.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from codec.conv import PAD_MODES, PADDING_CONVENTIONS, StreamableConv1d, StreamableConvTranspose1d, unit_norm_init_
from codec.streaming import StreamingModule

Activation = Literal["elu", "snake"]
ACTIVATIONS = ("elu", "snake")


@dataclass
class SEANetConfig:
    """Shared by encoder and decoder; defaults are EnCodec 24 kHz. Knobs are documented in configs/codec/."""

    dimension: int = 128
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    n_residual_layers: int = 1
    dilation_base: int = 2
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    compress: int = 2
    lstm_layers: int = 2
    activation: str = "elu"  # Activation: hydra structured configs take no Literal
    causal: bool = True
    pad_mode: str = "reflect"  # codec.conv.PadMode
    true_skip: bool = False
    final_tanh: bool = False
    unit_norm_init: bool = False
    decoder_n_filters: int | None = None  # None: n_filters (the decoder mirrors the encoder)
    encoder_last_kernel_size: int | None = None  # None: last_kernel_size
    padding_convention: str = "encodec"  # codec.conv.PaddingConvention

    def __post_init__(self) -> None:
        self.ratios = tuple(int(ratio) for ratio in self.ratios)
        if not self.ratios or any(ratio < 1 for ratio in self.ratios):
            raise ValueError(f"ratios must be a non-empty list of integers >= 1, got {self.ratios}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        if self.n_filters % self.compress:
            raise ValueError(f"compress ({self.compress}) must divide n_filters ({self.n_filters})")
        for name in ("decoder_n_filters", "encoder_last_kernel_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.decoder_n_filters is not None and self.decoder_n_filters % self.compress:
            raise ValueError(f"compress ({self.compress}) must divide decoder_n_filters ({self.decoder_n_filters})")
        if self.padding_convention not in PADDING_CONVENTIONS:
            raise ValueError(
                f"padding_convention must be one of {PADDING_CONVENTIONS}, got {self.padding_convention!r}"
            )
        if self.padding_convention == "dac" and (self.causal or self.pad_mode != "constant"):
            raise ValueError(f"padding_convention 'dac' is DAC's non-causal zero padding: it needs causal false and "
                             f"pad_mode 'constant', got causal {self.causal}, pad_mode {self.pad_mode!r}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)


class Snake(nn.Module):
    """x + sin^2(alpha * x) / alpha with a learnable alpha per channel (Ziyin et al. 2020; DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


def make_activation(name: Activation, channels: int) -> nn.Module:
    return nn.ELU(alpha=1.0) if name == "elu" else Snake(channels)


class ResidualUnit(nn.Module):
    """act, conv(kernel, dilation) w -> w / compress, act, conv(1) -> w, plus a skip (identity or 1x1 conv)."""

    def __init__(self, channels: int, dilation: int, config: SEANetConfig) -> None:
        super().__init__()
        hidden = channels // config.compress

        def conv(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> StreamableConv1d:
            return StreamableConv1d(
                in_channels, out_channels, kernel_size, dilation=dilation, causal=config.causal,
                pad_mode=config.pad_mode,
            )

        self.block = nn.Sequential(
            make_activation(config.activation, channels),
            conv(channels, hidden, config.residual_kernel_size, dilation=dilation),
            make_activation(config.activation, hidden),
            conv(hidden, channels, 1),
        )
        self.shortcut = nn.Identity() if config.true_skip else conv(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.block(x)


@dataclass
class LSTMState:
    hidden: Tensor  # [num_layers, B, D]
    cell: Tensor  # [num_layers, B, D]


class StreamableLSTM(StreamingModule[LSTMState]):
    """Multi-layer LSTM over time with a skip connection, on conv layout [B, D, F] -> [B, D, F]."""

    def __init__(self, dimension: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dimension, dimension, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        sequence = rearrange(x, "b d f -> f b d")
        if self.is_streaming:
            state = self.streaming_state
            if x.shape[0] != state.hidden.shape[1]:
                raise ValueError(f"streaming batch size is {state.hidden.shape[1]}, got a chunk of batch {x.shape[0]}")
            output = self._step_by_step(sequence, state)
        else:
            output, _ = self.lstm(sequence)
        return rearrange(output + sequence, "f b d -> b d f")

    def _step_by_step(self, sequence: Tensor, state: LSTMState) -> Tensor:
        """nn.LSTM's recurrence written out, [F, B, D] -> [F, B, D], carrying (hidden, cell) in `state`.

        For streaming's short chunks: oneDNN's fused LSTM spends more time preparing its weights than computing
        one frame (2 layers of 512: ~27 ms vs ~6 ms per frame, measured on the project's CPU).
        """
        layer_input = sequence
        last_hidden, last_cell = [], []
        for layer in range(self.lstm.num_layers):
            weight_hh = getattr(self.lstm, f"weight_hh_l{layer}")
            bias = getattr(self.lstm, f"bias_ih_l{layer}") + getattr(self.lstm, f"bias_hh_l{layer}")
            input_gates = F.linear(layer_input, getattr(self.lstm, f"weight_ih_l{layer}"), bias)  # [F, B, 4 * D]
            hidden, cell = state.hidden[layer], state.cell[layer]  # [B, D]
            outputs = []
            for frame_gates in input_gates:
                gates = frame_gates + F.linear(hidden, weight_hh)
                input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=-1)
                cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(input_gate) * torch.tanh(candidate)
                hidden = torch.sigmoid(output_gate) * torch.tanh(cell)
                outputs.append(hidden)
            last_hidden.append(hidden)
            last_cell.append(cell)
            layer_input = torch.stack(outputs)
        state.hidden, state.cell = torch.stack(last_hidden), torch.stack(last_cell)
        return layer_input

    def init_streaming_state(self, batch_size: int) -> LSTMState:
        shape = (self.lstm.num_layers, batch_size, self.lstm.hidden_size)
        reference = self.lstm.weight_ih_l0
        return LSTMState(hidden=reference.new_zeros(shape), cell=reference.new_zeros(shape))


class SEANetEncoder(StreamingModule[None]):
    """[B, C, T] -> latents [B, D, ceil(T / hop_length)]"""

    def __init__(self, channels: int, config: SEANetConfig) -> None:
        super().__init__()
        width = config.n_filters
        layers: list[nn.Module] = [
            StreamableConv1d(channels, width, config.kernel_size, causal=config.causal, pad_mode=config.pad_mode)
        ]
        for ratio in reversed(config.ratios):
            layers += [ResidualUnit(width, config.dilation_base**j, config) for j in range(config.n_residual_layers)]
            layers += [
                make_activation(config.activation, width),
                StreamableConv1d(
                    width, 2 * width, 2 * ratio, stride=ratio, causal=config.causal, pad_mode=config.pad_mode
                ),
            ]
            width *= 2
        if config.lstm_layers:
            layers.append(StreamableLSTM(width, config.lstm_layers))
        last_kernel_size = config.last_kernel_size
        if config.encoder_last_kernel_size is not None:
            last_kernel_size = config.encoder_last_kernel_size
        layers += [
            make_activation(config.activation, width),
            StreamableConv1d(width, config.dimension, last_kernel_size, causal=config.causal, pad_mode=config.pad_mode),
        ]
        self.layers = nn.Sequential(*layers)
        self.hop_length = config.hop_length
        self.padding_convention = config.padding_convention
        if config.unit_norm_init:
            unit_norm_init_(self)

    def forward(self, wav: Tensor) -> Tensor:
        if self.padding_convention == "dac":
            wav = F.pad(wav, (0, -wav.shape[-1] % self.hop_length))  # [B, C, F * hop_length]
        return self.layers(wav)


class SEANetDecoder(StreamingModule[None]):
    """latents [B, D, F] -> [B, C, F * hop_length]"""

    def __init__(self, channels: int, config: SEANetConfig) -> None:
        super().__init__()
        n_filters = config.n_filters if config.decoder_n_filters is None else config.decoder_n_filters
        width = n_filters * 2 ** len(config.ratios)
        layers: list[nn.Module] = [
            StreamableConv1d(
                config.dimension, width, config.kernel_size, causal=config.causal, pad_mode=config.pad_mode
            )
        ]
        if config.lstm_layers:
            layers.append(StreamableLSTM(width, config.lstm_layers))
        for ratio in config.ratios:
            layers += [
                make_activation(config.activation, width),
                StreamableConvTranspose1d(width, width // 2, 2 * ratio, stride=ratio, causal=config.causal,
                                          padding_convention=config.padding_convention),
            ]
            width //= 2
            layers += [ResidualUnit(width, config.dilation_base**j, config) for j in range(config.n_residual_layers)]
        layers += [
            make_activation(config.activation, width),
            StreamableConv1d(width, channels, config.last_kernel_size, causal=config.causal, pad_mode=config.pad_mode),
        ]
        if config.final_tanh:
            layers.append(nn.Tanh())
        self.layers = nn.Sequential(*layers)
        self.hop_length = config.hop_length
        self.padding_convention = config.padding_convention
        if config.unit_norm_init:
            unit_norm_init_(self)

    def forward(self, latents: Tensor) -> Tensor:
        wav = self.layers(latents)  # [B, C, F * hop_length], "dac": one sample less per odd stride
        if self.padding_convention == "dac":
            wav = F.pad(wav, (0, latents.shape[-1] * self.hop_length - wav.shape[-1]))
        return wav
