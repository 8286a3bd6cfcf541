"""Discriminators for codec GAN training, selectable and combinable from config.

- `MultiScaleSTFTDiscriminator` (EnCodec's MS-STFTD): one 2-D conv stack per FFT size over the complex STFT
  (real and imaginary parts as channels).
- `MultiPeriodDiscriminator` (HiFi-GAN's MPD): the waveform folded into [T / p, p] for each period p, 2-D convs
  with kernels along time only, so each column sees samples p apart.
- `MultiBandSTFTDiscriminator` (DAC's MRD): complex STFT per FFT size, the frequency axis split into bands that
  each get their own conv stack; band outputs are concatenated along frequency before a shared output conv.

Every sub-discriminator (one FFT size, one period) returns a `DiscriminatorOutput`; `Discriminator` runs all
enabled families and returns the flat list, which the losses in `codec/losses.py` average over.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class DiscriminatorOutput(NamedTuple):
    logits: Tensor          # [B, 1, ...] one score per time-frequency (or time-period) cell
    features: list[Tensor]  # hidden activations of every layer but the output one, for feature matching


@dataclass
class STFTDiscriminatorConfig:
    """EnCodec's MS-STFTD."""

    n_ffts: list[int]   # one sub-discriminator per FFT size; hop = n_fft / 4
    channels: int       # conv width (EnCodec 32)


@dataclass
class PeriodDiscriminatorConfig:
    """HiFi-GAN's MPD."""

    periods: list[int]    # one sub-discriminator per period (HiFi-GAN and DAC [2, 3, 5, 7, 11])
    channels: list[int]   # widths of the strided convs (HiFi-GAN [32, 128, 512, 1024]); one more conv keeps the last


@dataclass
class MultiBandSTFTDiscriminatorConfig:
    """DAC's multi-band, multi-scale complex STFT discriminator."""

    n_ffts: list[int]            # one sub-discriminator per FFT size; hop = n_fft / 4 (DAC [2048, 1024, 512])
    band_edges: list[float]      # band boundaries as fractions of the frequency axis (DAC [0, .1, .25, .5, .75, 1])
    channels: int                # conv width (DAC 32)


@dataclass
class DiscriminatorConfig:
    """Which families to use (a family is off when its entry is null) and how the input is prepared."""

    stft: STFTDiscriminatorConfig | None = None
    period: PeriodDiscriminatorConfig | None = None
    multiband_stft: MultiBandSTFTDiscriminatorConfig | None = None
    normalize_input: bool = False   # DAC: remove DC and scale each clip's peak to 0.8 before every discriminator

    def __post_init__(self) -> None:
        # Hydra gives plain mappings for the nested parts.
        if isinstance(self.stft, Mapping):
            self.stft = STFTDiscriminatorConfig(**self.stft)
        if isinstance(self.period, Mapping):
            self.period = PeriodDiscriminatorConfig(**self.period)
        if isinstance(self.multiband_stft, Mapping):
            self.multiband_stft = MultiBandSTFTDiscriminatorConfig(**self.multiband_stft)


def _conv2d(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
) -> nn.Module:
    """Weight-normed 2-D conv with 'same' padding along both axes (before striding)."""
    padding = ((kernel[0] - 1) * dilation[0] // 2, (kernel[1] - 1) * dilation[1] // 2)
    return weight_norm(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, dilation=dilation, padding=padding))


def _run_stack(layers: nn.ModuleList, x: Tensor, negative_slope: float) -> tuple[Tensor, list[Tensor]]:
    """Each layer followed by a leaky ReLU; returns the last activation and all of them (for feature matching)."""
    features = []
    for layer in layers:
        x = nn.functional.leaky_relu(layer(x), negative_slope)
        features.append(x)
    return x, features


def complex_spectrogram(wav: Tensor, n_fft: int) -> Tensor:
    """wav [B, C, T] -> [B, 2C, frames, n_fft // 2 + 1]: real and imaginary parts as channels."""
    B, C, T = wav.shape
    spec = torch.stft(
        rearrange(wav, "b c t -> (b c) t"),
        n_fft=n_fft,
        hop_length=n_fft // 4,
        window=torch.hann_window(n_fft, device=wav.device, dtype=wav.dtype),
        normalized=True,
        center=True,
        return_complex=True,
    )  # [(B C), F, frames]
    spec = torch.view_as_real(spec)  # [(B C), F, frames, 2]
    return rearrange(spec, "(b c) f t ri -> b (c ri) t f", b=B)


class STFTSubDiscriminator(nn.Module):
    """EnCodec's per-scale STFT discriminator: frequency is downsampled by stride 2 in three dilated layers."""

    def __init__(self, n_fft: int, audio_channels: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        self.layers = nn.ModuleList(
            [
                _conv2d(2 * audio_channels, channels, (3, 9)),
                *(_conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1)) for d in (1, 2, 4)),
                _conv2d(channels, channels, (3, 3)),
            ]
        )
        self.output = _conv2d(channels, 1, (3, 3))

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        x, features = _run_stack(self.layers, complex_spectrogram(wav, self.n_fft), negative_slope=0.2)
        return DiscriminatorOutput(self.output(x), features)


class PeriodSubDiscriminator(nn.Module):
    """HiFi-GAN's per-period discriminator: kernels (5, 1), stride 3 along the folded time axis."""

    def __init__(self, period: int, audio_channels: int, channels: list[int]):
        super().__init__()
        self.period = period
        widths = [audio_channels, *channels]
        strided = [_conv2d(c_in, c_out, (5, 1), stride=(3, 1)) for c_in, c_out in zip(widths[:-1], widths[1:])]
        self.layers = nn.ModuleList([*strided, _conv2d(widths[-1], widths[-1], (5, 1))])
        self.output = _conv2d(widths[-1], 1, (3, 1))

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        pad = (-wav.shape[-1]) % self.period
        wav = nn.functional.pad(wav, (0, pad), mode="reflect")
        folded = rearrange(wav, "b c (t p) -> b c t p", p=self.period)
        x, features = _run_stack(self.layers, folded, negative_slope=0.1)
        return DiscriminatorOutput(self.output(x), features)


class MultiBandSTFTSubDiscriminator(nn.Module):
    """DAC's per-scale discriminator: one conv stack per frequency band, outputs joined along frequency."""

    def __init__(self, n_fft: int, band_edges: list[float], audio_channels: int, channels: int):
        super().__init__()
        self.n_fft = n_fft
        n_bins = n_fft // 2 + 1
        self.bands = [(int(low * n_bins), int(high * n_bins)) for low, high in zip(band_edges[:-1], band_edges[1:])]
        if any(high <= low for low, high in self.bands):
            raise ValueError(f"multiband_stft.band_edges {band_edges} leave an empty band at n_fft {n_fft}")
        self.band_stacks = nn.ModuleList(
            nn.ModuleList(
                [
                    _conv2d(2 * audio_channels, channels, (3, 9)),
                    *(_conv2d(channels, channels, (3, 9), stride=(1, 2)) for _ in range(3)),
                    _conv2d(channels, channels, (3, 3)),
                ]
            )
            for _ in self.bands
        )
        self.output = _conv2d(channels, 1, (3, 3))

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        spec = complex_spectrogram(wav, self.n_fft)  # [B, 2C, frames, F]
        features, band_outputs = [], []
        for (low, high), stack in zip(self.bands, self.band_stacks):
            x, band_features = _run_stack(stack, spec[..., low:high], negative_slope=0.1)
            features.extend(band_features)
            band_outputs.append(x)
        x = torch.cat(band_outputs, dim=-1)  # [B, channels, frames, F']
        return DiscriminatorOutput(self.output(x), features)


class Discriminator(nn.Module):
    """All enabled sub-discriminators; forward returns one `DiscriminatorOutput` per sub-discriminator."""

    def __init__(self, config: DiscriminatorConfig, audio_channels: int):
        super().__init__()
        self.normalize_input = config.normalize_input
        subs: list[nn.Module] = []
        if config.stft is not None:
            _check_n_ffts("stft.n_ffts", config.stft.n_ffts)
            subs += [STFTSubDiscriminator(n, audio_channels, config.stft.channels) for n in config.stft.n_ffts]
        if config.period is not None:
            if not config.period.periods or min(config.period.periods) < 2:
                raise ValueError(
                    f"period.periods must be a non-empty list of integers >= 2, got {config.period.periods}"
                )
            subs += [PeriodSubDiscriminator(p, audio_channels, config.period.channels) for p in config.period.periods]
        if config.multiband_stft is not None:
            band = config.multiband_stft
            _check_n_ffts("multiband_stft.n_ffts", band.n_ffts)
            edges = band.band_edges
            if len(edges) < 2 or edges[0] != 0 or edges[-1] != 1 or sorted(edges) != list(edges):
                raise ValueError(f"multiband_stft.band_edges must rise from 0 to 1, got {edges}")
            subs += [MultiBandSTFTSubDiscriminator(n, edges, audio_channels, band.channels) for n in band.n_ffts]
        if not subs:
            raise ValueError("DiscriminatorConfig enables no discriminator: set stft, period or multiband_stft")
        self.subs = nn.ModuleList(subs)

    def forward(self, wav: Tensor) -> list[DiscriminatorOutput]:
        """wav [B, C, T] -> one output per sub-discriminator."""
        if self.normalize_input:
            wav = wav - wav.mean(dim=-1, keepdim=True)
            wav = 0.8 * wav / (wav.abs().amax(dim=-1, keepdim=True) + 1e-9)
        return [sub(wav) for sub in self.subs]


def _check_n_ffts(name: str, n_ffts: list[int]) -> None:
    if not n_ffts or min(n_ffts) < 16:
        raise ValueError(f"{name} must be a non-empty list of FFT sizes >= 16, got {n_ffts}")
