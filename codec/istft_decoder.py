"""A Fourier decoder: ConvNeXt blocks at the frame rate, then an inverse STFT (Vocos, Siuzdak 2023), made causal.

    latents [B, D, F] --causal conv, LayerNorm--> [B, W, F] --ConvNeXt blocks, LayerNorm--> [B, W, F]
        --linear--> log-magnitude and phase [B, C, n_fft / 2 + 1, F] each
        --spectrum = exp(log-magnitude) (clipped) * e^(i phase); irfft, window, overlap-add--> wav [B, C, F * hop]

Where SEANet up-samples by a chain of transposed convs, this decoder stays at the frame rate and predicts, for
every frame and channel, one short-time spectrum of n_fft = window_hops * hop samples; the inverse FFT does the
up-sampling. Every layer before the inverse STFT looks at the current frame and earlier ones only (left-padded
depthwise convs; LayerNorm and the linear layers act on one frame at a time).

Alignment (the layout of EnCodec's causal transposed conv): frame f's windowed segment is added at samples
[f * hop, f * hop + n_fft). Output block f, samples [f * hop, (f + 1) * hop), is therefore complete once frame f
has been added; offline `decode` returns the first F * hop samples of the overlap-add, and streaming carries the
remaining n_fft - hop samples (the tail, still missing the next frames' contributions) into the next chunk. The
price is look-ahead the decoder must learn: block f sits at the start of frame f's window, so with a symmetric
window it is mostly made of frames f - 1 (window_hops 2) or f - 1 and f - 2 (window_hops 4), which must predict
audio their latents have not yet heard. docs/istft_decoder.md has the measurements behind the default.

Normalisation: the overlap-add is divided by the steady-state window envelope sum_k window(j + k * hop)^2 (a
period of `hop` samples), the same for every block. torch.istft divides by the envelope of the frames actually
present instead; the two agree from sample n_fft - hop on. One envelope everywhere keeps the first blocks of a
streamed decode equal to the offline ones without knowing where the stream started.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from codec.streaming import StreamingModule

DECODER_KINDS = ("seanet", "istft")
WINDOWS = ("hann", "sqrt_hann")
MAX_MAGNITUDE = 100.0  # Vocos clips exp(log-magnitude) here so one bad frame cannot blow up the output
INIT_STD = 0.02  # Vocos (and ConvNeXt) initialise convs and linear layers truncated-normal with this std


@dataclass
class DecoderConfig:
    """`kind` picks the decoder: `seanet` is the SEANet decoder (built from CodecConfig.seanet), `istft` is
    ISTFTDecoder, built from the other keys (documented in configs/codec/base.yaml)."""

    kind: str = "seanet"
    width: int = 512
    intermediate_width: int = 1536
    num_blocks: int = 8
    kernel_size: int = 7
    window: str = "hann"
    window_hops: int = 2

    def __post_init__(self) -> None:
        if self.kind not in DECODER_KINDS:
            raise ValueError(f"decoder.kind must be one of {DECODER_KINDS}, got {self.kind!r}")
        if self.window not in WINDOWS:
            raise ValueError(f"decoder.window must be one of {WINDOWS}, got {self.window!r}")
        if self.window_hops < 2:
            raise ValueError(f"decoder.window_hops must be >= 2 (a window of one hop has no overlap), got "
                             f"{self.window_hops}")
        for name in ("width", "intermediate_width", "num_blocks", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoder.{name} must be >= 1, got {getattr(self, name)}")


def synthesis_window(name: str, n_fft: int) -> Tensor:
    """[n_fft] periodic window; `sqrt_hann` squared is a Hann window, so with window_hops 2 its envelope is 1."""
    hann = torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device="cpu")  # also under a meta device
    return (hann if name == "hann" else hann.sqrt()).float()


@dataclass
class CausalConvState:
    previous: Tensor  # [B, C_in, kernel - 1] last inputs: the left context of the next chunk


class CausalConv1d(StreamingModule[CausalConvState]):
    """nn.Conv1d (stride 1) that sees no future: kernel - 1 zeros on the left offline, the previous chunk's last
    inputs when streaming (zeros before the first chunk, as offline). [B, C_in, F] -> [B, C_out, F]"""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, groups=groups)
        self.context = kernel_size - 1

    def forward(self, x: Tensor) -> Tensor:
        if not self.is_streaming:
            return self.conv(F.pad(x, (self.context, 0)))
        state = self.streaming_state
        if x.shape[0] != state.previous.shape[0]:
            raise ValueError(f"streaming batch size is {state.previous.shape[0]}, got a chunk of batch {x.shape[0]}")
        x = torch.cat([state.previous, x], dim=-1)
        state.previous = x[..., x.shape[-1] - self.context :]
        return self.conv(x)

    def init_streaming_state(self, batch_size: int) -> CausalConvState:
        return CausalConvState(previous=self.conv.weight.new_zeros(batch_size, self.conv.in_channels, self.context))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each frame, on conv layout [B, W, F] -> [B, W, F]."""

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(super().forward(rearrange(x, "b w f -> b f w")), "b f w -> b w f")


class ConvNeXtBlock(nn.Module):
    """x + scale * MLP(norm(depthwise_conv(x))) with a GELU MLP per frame (Liu et al. 2022, as in Vocos).
    [B, W, F] -> [B, W, F]"""

    def __init__(self, width: int, intermediate_width: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.depthwise = CausalConv1d(width, width, kernel_size, groups=width)
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, intermediate_width)
        self.contract = nn.Linear(intermediate_width, width)
        self.scale = nn.Parameter(torch.full((width,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:
        hidden = rearrange(self.depthwise(x), "b w f -> b f w")
        hidden = self.scale * self.contract(F.gelu(self.expand(self.norm(hidden))))  # [B, F, W]
        return x + rearrange(hidden, "b f w -> b w f")


@dataclass
class OverlapAddState:
    tail: Tensor  # [B, C, n_fft - hop] overlap-add past the last returned block, not yet normalised


class InverseSTFT(StreamingModule[OverlapAddState]):
    """One-sided spectra [B, C, n_fft / 2 + 1, F] (complex) -> wav [B, C, F * hop]: irfft, window, overlap-add
    with frame f at samples [f * hop, f * hop + n_fft), divided by the steady-state window envelope."""

    def __init__(self, channels: int, n_fft: int, hop_length: int, window: str) -> None:
        super().__init__()
        if n_fft % hop_length:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop_length ({hop_length})")
        self.channels = channels
        self.n_fft = n_fft
        self.hop_length = hop_length
        synthesis = synthesis_window(window, n_fft)
        envelope = rearrange(synthesis**2, "(k j) -> k j", j=hop_length).sum(0)  # [hop], >= 0.5 for 2 hops or more
        self.register_buffer("window", synthesis, persistent=False)
        self.register_buffer("envelope", envelope, persistent=False)

    def forward(self, spectra: Tensor) -> Tensor:
        B, C, bins, num_frames = spectra.shape
        if (C, bins) != (self.channels, self.n_fft // 2 + 1):
            raise ValueError(f"spectra must be [B, {self.channels}, {self.n_fft // 2 + 1}, F] (channels, n_fft / 2 + 1 "
                             f"bins), got {tuple(spectra.shape)}")
        segments = torch.fft.irfft(spectra, n=self.n_fft, dim=2) * self.window[:, None]  # [B, C, n_fft, F]
        length = (num_frames - 1) * self.hop_length + self.n_fft
        overlapped = F.fold(  # sums segment f into samples [f * hop, f * hop + n_fft)
            rearrange(segments, "b c n f -> (b c) n f"),
            output_size=(1, length),
            kernel_size=(1, self.n_fft),
            stride=(1, self.hop_length),
        )
        overlapped = rearrange(overlapped, "(b c) 1 1 t -> b c t", b=B)  # [B, C, (F - 1) * hop + n_fft]
        num_samples = num_frames * self.hop_length
        if self.is_streaming:
            state = self.streaming_state
            if B != state.tail.shape[0]:
                raise ValueError(f"streaming batch size is {state.tail.shape[0]}, got a chunk of batch {B}")
            overlapped = overlapped + F.pad(state.tail, (0, length - state.tail.shape[-1]))
            state.tail = overlapped[..., num_samples:]
        blocks = rearrange(overlapped[..., :num_samples], "b c (f j) -> b c f j", j=self.hop_length)
        return rearrange(blocks / self.envelope, "b c f j -> b c (f j)")

    def init_streaming_state(self, batch_size: int) -> OverlapAddState:
        return OverlapAddState(tail=self.window.new_zeros(batch_size, self.channels, self.n_fft - self.hop_length))


class ISTFTDecoder(StreamingModule[None]):
    """latents [B, D, F] -> wav [B, C, F * hop_length]; always causal, streams under `streaming()`."""

    def __init__(self, channels: int, dimension: int, hop_length: int, config: DecoderConfig) -> None:
        super().__init__()
        self.channels = channels
        n_fft = config.window_hops * hop_length
        width = config.width
        self.embed = CausalConv1d(dimension, width, config.kernel_size)
        self.embed_norm = ChannelLayerNorm(width)
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(width, config.intermediate_width, config.kernel_size, layer_scale=1 / config.num_blocks)
            for _ in range(config.num_blocks)
        ])
        self.final_norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, channels * 2 * (n_fft // 2 + 1))  # log-magnitude and phase per bin
        self.inverse_stft = InverseSTFT(channels, n_fft, hop_length, config.window)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv1d, nn.Linear)):
                nn.init.trunc_normal_(layer.weight, std=INIT_STD)
                nn.init.zeros_(layer.bias)

    def spectra(self, latents: Tensor) -> Tensor:
        """latents [B, D, F] -> complex one-sided spectra [B, C, n_fft / 2 + 1, F]"""
        hidden = self.blocks(self.embed_norm(self.embed(latents)))  # [B, W, F]
        parts = self.head(self.final_norm(rearrange(hidden, "b w f -> b f w")))  # [B, F, C * 2 * bins]
        log_magnitude, phase = rearrange(parts, "b f (c part k) -> part b c k f", c=self.channels, part=2)
        return torch.polar(log_magnitude.exp().clamp(max=MAX_MAGNITUDE), phase)

    def forward(self, latents: Tensor) -> Tensor:
        return self.inverse_stft(self.spectra(latents))
