"""Per-example conditioning attributes and their collation into batches.

An example carries named text attributes (description, genre, mood, key, bpm, ... as strings) and named wave
attributes (a reference recording, e.g. the melody for chroma conditioning). A missing or None value is the null
condition for that attribute. Conditioners read only the names the config lists; other keys are ignored, so a
dataset may carry more metadata than a model uses.
"""
from dataclasses import dataclass, field

import torch
import torchaudio.functional as AF


@dataclass
class WavCondition:
    """A reference recording. wav: [C, T] float, sample_rate in Hz."""

    wav: torch.Tensor
    sample_rate: int

    def __post_init__(self) -> None:
        if self.wav.dim() != 2:
            raise ValueError(f"WavCondition.wav must be [C, T], got shape {tuple(self.wav.shape)}")
        if self.sample_rate <= 0:
            raise ValueError(f"WavCondition.sample_rate must be > 0, got {self.sample_rate}")


@dataclass
class ConditioningAttributes:
    """The conditions of one example: text values by name and reference waves by name (None = null condition)."""

    text: dict[str, str | None] = field(default_factory=dict)
    wav: dict[str, WavCondition | None] = field(default_factory=dict)


@dataclass
class WavBatch:
    """Mono reference waves of a batch at one sample rate.

    wav:     [B, T] zero-padded after each example's end
    lengths: [B] long, samples of real audio per example (0 for a missing reference)
    """

    wav: torch.Tensor
    lengths: torch.Tensor


def collate_texts(attributes: list[ConditioningAttributes], name: str) -> list[str | None]:
    """The text attribute `name` of every example as a string (a bpm of 120 becomes "120"); missing, None and
    blank values all become None."""
    values = [example.text.get(name) for example in attributes]
    texts = [None if value is None else str(value).strip() for value in values]
    return [text if text else None for text in texts]


def collate_wavs(attributes: list[ConditioningAttributes], name: str, sample_rate: int) -> WavBatch:
    """Mix the wave attribute `name` of every example down to mono, resample it to `sample_rate` and pad to [B, T]."""
    waves = []
    for example in attributes:
        reference = example.wav.get(name)
        if reference is None:
            waves.append(torch.zeros(0))
            continue
        mono = reference.wav.float().mean(dim=0)  # [T]
        if reference.sample_rate != sample_rate:
            mono = AF.resample(mono, orig_freq=reference.sample_rate, new_freq=sample_rate)
        waves.append(mono)
    lengths = torch.tensor([wave.shape[0] for wave in waves], dtype=torch.long)
    wav = torch.zeros(len(waves), max([1] + lengths.tolist()))
    for index, wave in enumerate(waves):
        wav[index, : wave.shape[0]] = wave
    return WavBatch(wav=wav, lengths=lengths)
