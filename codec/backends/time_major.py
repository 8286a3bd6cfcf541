"""The SEANet encoder and decoder rebuilt for inference: time-major activations, folded weights, fused branches.

The reference modules (codec/seanet.py, codec/conv.py) keep activations as [B, C, T] and recompute weight norm.
Here every activation is time-major, x [B, T, C] (contiguous), the memory order oneDNN's fast 1-D convolution
kernels want: `x.transpose(1, 2)[:, :, None]` is a channels-last [B, C, 1, T] view of the same memory, no copy,
and a channels-last conv2d writes its output time-major again. PyTorch's CPU conv on the channels-first layout
runs some of the codec's shapes several times slower, and short inputs fall back to its unblocked im2col kernel.
Around the convs:

- weight norm is computed once, when the module is built, and stored as plain weights;
- an activation that precedes a padded conv is applied in place to the padded copy the conv needs anyway (ELU and
  Snake map 0 to 0, so they commute with zero, replicate and reflect padding); ELU in place is elu.py's kernel;
- a residual unit's 1x1 conv and its 1x1 shortcut accumulate into one output (two matmuls, no separate add);
- a causal transposed conv is computed as what it is, a causal polyphase conv whose `stride` phases are written
  next to each other in time-major memory, so the up-sampled output needs no interleaving copy and streaming
  carries input context (as every other conv does) instead of an overlap-add tail;
- streaming chunks run each conv as one matmul over its windows (`windowed_matmul`) and each LSTM frame as one
  fused LSTM cell per layer: at a few frames per call, reading the weights once is what counts.

Each module is built from its reference module and computes the same function up to float rounding (another
summation order, elu.py's exp); tests/codec/test_codec_backend.py holds them to 1e-5, offline and streaming.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from codec.backends.elu import elu_, elu_into, kernel_available
from codec.conv import StreamableConv1d, StreamableConvTranspose1d, extra_padding_for_conv1d
from codec.seanet import ResidualUnit, SEANetDecoder, SEANetEncoder, Snake, StreamableLSTM
from codec.streaming import StreamingModule


def channels_last_view(x: Tensor) -> Tensor:
    """Time-major [B, T, C] -> the same memory as a channels-last [B, C, 1, T] conv2d input."""
    return x.transpose(1, 2).unsqueeze(2)


def time_major_view(y: Tensor) -> Tensor:
    """A channels-last conv2d output [B, C, 1, T] -> the same memory as [B, T, C]."""
    return y.squeeze(2).transpose(1, 2)


def pad_time(x: Tensor, left: int, right: int, mode: str, activation: "Activation | None" = None) -> Tensor:
    """Pads the time axis of x [B, T, C] as codec.conv.pad1d pads the last axis, optionally activating it too
    (activations map 0 to 0, so this equals padding the activated x) -> [B, left + T + right, C].

    x is written once into the new buffer, through the activation, and the edges are filled from that copy: a
    separate activation pass, or F.pad's reflect and replicate kernels on this layout, cost several times more.
    As in pad1d, a reflection longer than the signal reflects the signal followed by zeros.
    """
    B, T, C = x.shape
    short_by = max(0, max(left, right) - T + 1) if mode == "reflect" else 0
    length = T + short_by  # the reflected signal: x, then short_by zeros
    padded = x.new_empty(B, left + length + right, C)
    if activation is None:
        padded[:, left : left + T] = x
    else:
        for item in range(B):  # each item's rows are contiguous in both
            activation.activate_into(x[item], padded[item, left : left + T])
    padded[:, left + T : left + length].zero_()
    if mode == "constant":
        padded[:, :left].zero_()
        padded[:, left + length :].zero_()
    elif mode == "replicate":
        padded[:, :left] = padded[:, left : left + 1]
        padded[:, left + length :] = padded[:, left + length - 1 : left + length]
    else:
        padded[:, :left] = padded[:, left + 1 : 2 * left + 1].flip(1)
        padded[:, left + length :] = padded[:, left + length - 1 - right : left + length - 1].flip(1)
    return padded[:, : left + T + right]


def windowed_matmul(x: Tensor, weight: Tensor, bias: Tensor, stride: int = 1, dilation: int = 1) -> Tensor:
    """The conv of x [B, L, C_in] (already padded) with a channels-last weight [C_out, C_in, 1, kernel] as one
    matmul of its windows [B * T', kernel * C_in] -> [B, T', C_out].

    For the few frames of a streaming chunk: a conv2d call reorders the weight into oneDNN's blocked layout every
    time, which for short inputs moves more bytes than the conv itself; the matmul reads the weight once, in place
    (its channels-last memory is the [C_out, kernel * C_in] matrix the windows need).
    """
    B, L, C = x.shape
    C_out, _, _, kernel = weight.shape
    windows = x.unfold(1, (kernel - 1) * dilation + 1, stride)  # [B, T', C_in, effective kernel]
    if dilation > 1:
        windows = windows[..., ::dilation]  # [B, T', C_in, kernel]
    T_out = windows.shape[1]
    windows = windows.transpose(2, 3).reshape(B * T_out, kernel * C)
    matrix = weight.permute(0, 2, 3, 1).reshape(C_out, kernel * C)  # a view: channels-last memory
    return torch.addmm(bias, windows, matrix.t()).view(B, T_out, C_out)


class TimeMajorSnake(nn.Module):
    """Snake (codec.seanet.Snake) over the last axis: x [..., C] -> [...,  C], the same formula."""

    def __init__(self, snake: Snake) -> None:
        super().__init__()
        self.register_buffer("alpha", snake.alpha.detach().reshape(-1).clone(), persistent=False)  # [C]

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)

    def activate_in_place(self, x: Tensor) -> Tensor:
        return x.add_((self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2))

    def activate_into(self, x: Tensor, out: Tensor) -> Tensor:
        return out.copy_(self(x))


class TimeMajorELU(nn.ELU):
    """nn.ELU (alpha 1, as SEANet's) with an in-place variant, elu.py's kernel, for the copies the convs make."""

    def __init__(self) -> None:
        super().__init__()
        kernel_available()  # builds it now rather than inside the first call

    def activate_in_place(self, x: Tensor) -> Tensor:
        return elu_(x)

    def activate_into(self, x: Tensor, out: Tensor) -> Tensor:
        return elu_into(x, out)


Activation = TimeMajorELU | TimeMajorSnake


def time_major_activation(activation: nn.Module) -> Activation:
    if isinstance(activation, nn.ELU):
        if activation.alpha != 1.0:
            raise ValueError(f"the time-major ELU has alpha 1 (SEANet's), got alpha {activation.alpha}")
        return TimeMajorELU()
    if isinstance(activation, Snake):
        return TimeMajorSnake(activation)
    raise ValueError(f"no time-major version of activation {type(activation).__name__}")


@dataclass
class ContextState:
    previous: Tensor | None  # [B, context, C_in] last (activated) inputs; None before the first chunk


class TimeMajorConv1d(StreamingModule[ContextState]):
    """codec.conv.StreamableConv1d, optionally preceded by its activation: x [B, T, C_in] -> [B, T', C_out].

    Offline, the input is padded (and activated on the way) and convolved as a channels-last conv2d; streaming,
    the previous chunk's last inputs are put before the chunk, the chunk is activated in place, and the conv is
    one matmul over its windows.
    """

    def __init__(self, reference: StreamableConv1d, activation: nn.Module | None = None) -> None:
        super().__init__()
        conv = reference.conv
        weight = conv.weight.detach()[:, :, None].contiguous(memory_format=torch.channels_last)
        self.register_buffer("weight", weight, persistent=False)  # [C_out, C_in, 1, kernel], weight norm applied
        self.register_buffer("bias", conv.bias.detach().clone(), persistent=False)  # [C_out]
        self.activation = None if activation is None else time_major_activation(activation)
        self.stride = reference.stride
        self.dilation = conv.dilation[0]
        self.effective_kernel_size = reference.effective_kernel_size
        self.padding_total = reference.padding_total
        self.causal = reference.causal
        self.pad_mode = reference.pad_mode

    def forward(self, x: Tensor) -> Tensor:
        if self.is_streaming:
            return windowed_matmul(self._forward_streaming(x), self.weight, self.bias, self.stride, self.dilation)
        conv = F.conv2d(channels_last_view(self._pad(x)), self.weight, self.bias, stride=(1, self.stride),
                        dilation=(1, self.dilation))
        return time_major_view(conv)  # [B, T', C_out]

    def _pad(self, x: Tensor) -> Tensor:
        """x [B, T, C_in] -> the activated, padded input [B, left + T + right, C_in] (as StreamableConv1d pads)."""
        extra = extra_padding_for_conv1d(x.shape[1], self.effective_kernel_size, self.stride, self.padding_total)
        if self.causal:
            left, right = self.padding_total, extra
        else:
            left, right = self.padding_total - self.padding_total // 2, self.padding_total // 2 + extra
        if not (left or right):
            return x if self.activation is None else self.activation(x)
        return pad_time(x, left, right, self.pad_mode, self.activation)

    def init_streaming_state(self, batch_size: int) -> ContextState:
        if not self.causal:
            raise ValueError("streaming needs causal=True: a non-causal conv looks ahead of the chunk")
        if self.pad_mode == "reflect":
            raise ValueError("streaming needs pad_mode 'constant' or 'replicate': reflect padding reads ahead")
        return ContextState(previous=None)

    def _forward_streaming(self, x: Tensor) -> Tensor:
        """This chunk [B, T, C_in] -> [B, context + T, C_in]: the previous chunk's last inputs (a constant- or
        replicate-padded start on the first chunk), then this chunk, activated."""
        state = self.streaming_state
        B, T, C = x.shape
        if T == 0 or T % self.stride:
            raise ValueError(f"streaming chunk length must be a positive multiple of stride {self.stride}, got {T}")
        if state.previous is None:
            x = pad_time(x, self.padding_total, 0, self.pad_mode, self.activation)
        else:
            if B != state.previous.shape[0]:
                raise ValueError(f"streaming batch size is {state.previous.shape[0]}, got a chunk of batch {B}")
            x = torch.cat([state.previous, x], dim=1)
            if self.activation is not None:
                self.activation.activate_in_place(x[:, self.padding_total :])
        state.previous = x[:, x.shape[1] - self.padding_total :]
        return x


class TimeMajorResidualUnit(nn.Module):
    """codec.seanet.ResidualUnit: x + act, conv(kernel), act, conv(1) with the 1x1 shortcut (or identity)
    accumulated into the last conv's output. x [B, T, C] -> [B, T, C]"""

    def __init__(self, reference: ResidualUnit) -> None:
        super().__init__()
        first_activation, conv, second_activation, pointwise = reference.block
        self.conv = TimeMajorConv1d(conv, activation=first_activation)  # streams: carries the conv's context
        self.activation = time_major_activation(second_activation)
        convs = [pointwise] if isinstance(reference.shortcut, nn.Identity) else [pointwise, reference.shortcut]
        if any(conv.kernel_size != 1 or conv.stride != 1 for conv in convs):
            raise ValueError("a residual unit's last conv and shortcut must be 1x1 convs")
        # x @ matrix: [C / compress, C] and [C, C] (None: identity shortcut); bias: both 1x1 convs' biases [C]
        matrices = [conv.conv.weight.detach()[..., 0].t().contiguous() for conv in convs]
        self.register_buffer("pointwise", matrices[0], persistent=False)
        self.register_buffer("shortcut", matrices[1] if len(matrices) > 1 else None, persistent=False)
        self.register_buffer("bias", sum(conv.conv.bias.detach() for conv in convs), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        hidden = self.activation.activate_in_place(self.conv(x)).reshape(B * T, -1)  # conv output: a fresh tensor
        inputs = x.reshape(B * T, C)
        if self.shortcut is None:
            out = torch.addmm(self.bias, hidden, self.pointwise).add_(inputs)
        else:
            out = torch.addmm(self.bias, inputs, self.shortcut).addmm_(hidden, self.pointwise)
        return out.view(B, T, C)


@dataclass
class LSTMState:
    hidden: list[Tensor]  # per layer [B, D]
    cell: list[Tensor]  # per layer [B, D]


class TimeMajorLSTM(StreamingModule[LSTMState]):
    """codec.seanet.StreamableLSTM (LSTM plus skip) on x [B, F, D] -> [B, F, D].

    Offline: one batch-first nn.LSTM call (oneDNN's fused kernel). Streaming: one LSTM cell call per layer and
    frame, since the fused kernel's per-call setup costs more than a few frames of compute.
    """

    def __init__(self, reference: StreamableLSTM) -> None:
        super().__init__()
        lstm = reference.lstm
        self.lstm = nn.LSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True)
        self.lstm.load_state_dict(lstm.state_dict())
        self.lstm.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        if not self.is_streaming:
            return self.lstm(x)[0] + x
        state = self.streaming_state
        if x.shape[0] != state.hidden[0].shape[0]:
            raise ValueError(f"streaming batch size is {state.hidden[0].shape[0]}, got a chunk of batch {x.shape[0]}")
        outputs = []
        for frame in x.unbind(1):  # [B, D]
            for layer in range(self.lstm.num_layers):
                state.hidden[layer], state.cell[layer] = torch.lstm_cell(
                    frame, (state.hidden[layer], state.cell[layer]), *self.lstm.all_weights[layer]
                )
                frame = state.hidden[layer]
            outputs.append(frame)
        return torch.stack(outputs, dim=1) + x

    def init_streaming_state(self, batch_size: int) -> LSTMState:
        zeros = [self.lstm.weight_ih_l0.new_zeros(batch_size, self.lstm.hidden_size) for _ in range(2)]
        return LSTMState(hidden=[zeros[0]] * self.lstm.num_layers, cell=[zeros[1]] * self.lstm.num_layers)


class TimeMajorConvTranspose1d(StreamingModule[ContextState]):
    """codec.conv.StreamableConvTranspose1d, optionally preceded by its activation: x [B, F, C_in] ->
    [B, F * stride, C_out].

    Output sample n * stride + p is sum_j x[n - j] . weight[:, :, p + j * stride] + bias: a conv with taps =
    kernel / stride taps and stride * C_out output channels, ordered (phase, channel) so that its time-major
    output [B, F, stride * C_out] is the up-sampled signal [B, F * stride, C_out] in memory. Causal: taps - 1
    inputs of left context, nothing trimmed. Non-causal: taps - 1 zeros on both sides, then EnCodec's trim.
    """

    def __init__(self, reference: StreamableConvTranspose1d, activation: nn.Module | None = None) -> None:
        super().__init__()
        if reference.padding_convention != "encodec":
            raise ValueError(f"the time-major transposed conv trims as EnCodec does; padding_convention "
                             f"{reference.padding_convention!r} is not supported")
        convtr = reference.convtr
        self.stride, self.taps = reference.stride, reference.taps
        self.padding_total, self.causal = reference.padding_total, reference.causal
        self.out_channels = convtr.out_channels
        weight = rearrange(convtr.weight.detach(), "ci co (j s) -> (s co) ci 1 j", s=self.stride).flip(-1)
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last), persistent=False)
        self.register_buffer("bias", convtr.bias.detach().repeat(self.stride), persistent=False)  # [stride * C_out]
        self.activation = None if activation is None else time_major_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        context = self.taps - 1
        if self.is_streaming:
            state = self.streaming_state
            if B != state.previous.shape[0]:
                raise ValueError(f"streaming batch size is {state.previous.shape[0]}, got a chunk of batch {B}")
            x = torch.cat([state.previous, x], dim=1)
            if self.activation is not None:
                self.activation.activate_in_place(x[:, context:])
            state.previous = x[:, x.shape[1] - context :]
            phases = windowed_matmul(x, self.weight, self.bias)  # [B, F, stride * C_out]
        else:
            x = pad_time(x, context, 0 if self.causal else context, "constant", self.activation)
            phases = time_major_view(F.conv2d(channels_last_view(x), self.weight, self.bias))  # [B, F', stride * C_out]
        y = phases.reshape(B, -1, self.out_channels)  # [B, F' * stride, C_out]
        if self.causal:
            return y
        right = self.padding_total // 2
        return y[:, self.padding_total - right : y.shape[1] - right]

    def init_streaming_state(self, batch_size: int) -> ContextState:
        if not self.causal:
            raise ValueError("streaming needs causal=True: a non-causal transposed conv trims future samples")
        previous = self.weight.new_zeros(batch_size, self.taps - 1, self.weight.shape[1])  # zeros: act(0) = 0
        return ContextState(previous=previous)


def time_major_layers(layers: nn.Sequential) -> nn.Sequential:
    """A SEANet layer stack -> the same stack of time-major modules, each activation merged into the conv after it."""
    converted: list[nn.Module] = []
    activation = None  # an activation waiting for the conv it precedes
    for layer in layers:
        if isinstance(layer, (nn.ELU, Snake)):
            if activation is not None:
                converted.append(time_major_activation(activation))
            activation = layer
            continue
        if isinstance(layer, StreamableConv1d):
            converted.append(TimeMajorConv1d(layer, activation))
        elif isinstance(layer, StreamableConvTranspose1d):
            converted.append(TimeMajorConvTranspose1d(layer, activation))
        else:
            if activation is not None:
                converted.append(time_major_activation(activation))
            if isinstance(layer, ResidualUnit):
                converted.append(TimeMajorResidualUnit(layer))
            elif isinstance(layer, StreamableLSTM):
                converted.append(TimeMajorLSTM(layer))
            elif isinstance(layer, nn.Tanh):
                converted.append(nn.Tanh())
            else:
                raise ValueError(f"no time-major version of SEANet layer {type(layer).__name__}")
        activation = None
    if activation is not None:
        converted.append(time_major_activation(activation))
    return nn.Sequential(*converted)


class TimeMajorSEANet(StreamingModule[None]):
    """The layers of a SEANet encoder or decoder, time-major: [B, T, C] -> [B, T', C'] (subclasses transpose)."""

    def __init__(self, reference: SEANetEncoder | SEANetDecoder) -> None:
        super().__init__()
        if reference.padding_convention != "encodec":
            raise ValueError(f"the time-major SEANet pads and trims as EnCodec does; padding_convention "
                             f"{reference.padding_convention!r} is not supported")
        self.layers = time_major_layers(reference.layers)


class TimeMajorEncoder(TimeMajorSEANet):
    """codec.seanet.SEANetEncoder, time-major inside: wav [B, C, T] -> latents [B, D, F] (a view of [B, F, D])."""

    def forward(self, wav: Tensor) -> Tensor:
        return self.layers(wav.transpose(1, 2)).transpose(1, 2)


class TimeMajorDecoder(TimeMajorSEANet):
    """codec.seanet.SEANetDecoder, time-major inside: latents [B, D, F] -> wav [B, C, F * hop_length]."""

    def forward(self, latents: Tensor) -> Tensor:
        return self.layers(latents.transpose(1, 2).contiguous()).transpose(1, 2)
