"""ConditionProvider: every configured conditioner, the dropouts and the fuser behind one call.

    attributes (B examples) --attribute dropout--> per-name conditioners --fuser--> ConditionTensors --CFG dropout-->

Built from one ConditionerConfig (config group `configs/conditioner/`): `ConditionProvider(ConditionerConfig(**cfg))`.
The names under `text`, `lookup` and `chroma` are the attribute names read from ConditioningAttributes (text values
for text and lookup conditioners, reference waves for chroma); `fuser` routes each of them.
"""
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from conditioners.attributes import ConditioningAttributes, collate_texts, collate_wavs
from conditioners.chroma import ChromaConditioner
from conditioners.dropout import AttributeDropout, ClassifierFreeDropout
from conditioners.fuser import ConditionFuser
from conditioners.lut import LookupConditioner
from conditioners.tensors import ConditionTensors
from conditioners.text import TextConditioner


@dataclass
class TextConditionerConfig:
    """See TextConditioner; `encoder` is 'minilm', a local directory, or a name already in the local HF cache."""

    encoder: str
    pooling: str
    max_length: int | None
    dtype: str
    cache_size: int


@dataclass
class LookupConditionerConfig:
    """See LookupConditioner; exactly one of the two is set."""

    vocabulary: list[str] | None = None
    hash_buckets: int | None = None


@dataclass
class ChromaConditionerConfig:
    """See ChromaConditioner; without `length`, frame_rate must equal the codec's frame rate. The keys after `argmax`
    default to the behaviour from before they existed, so older exports load unchanged."""

    sample_rate: int
    frame_rate: float
    n_fft: int
    min_frequency: float | None
    max_frequency: float | None
    argmax: bool
    filterbank: str = "nearest"
    normalized: bool = False
    silent_frames: str = "zero"
    length: int | None = None
    max_duration: float | None = None


@dataclass
class ConditionerConfig:
    """Every knob of the conditioning stack; configs/conditioner/*.yaml document each one."""

    output_dim: int
    cfg_dropout: float
    attribute_dropout: dict[str, float] = field(default_factory=dict)
    text: dict[str, TextConditionerConfig] = field(default_factory=dict)
    lookup: dict[str, LookupConditionerConfig] = field(default_factory=dict)
    chroma: dict[str, ChromaConditionerConfig] = field(default_factory=dict)
    fuser: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Plain YAML mappings become the typed sub-configs, so an unknown key fails here, not deep in a constructor.
        self.text = {name: _typed(TextConditionerConfig, value) for name, value in self.text.items()}
        self.lookup = {name: _typed(LookupConditionerConfig, value) for name, value in self.lookup.items()}
        self.chroma = {name: _typed(ChromaConditionerConfig, value) for name, value in self.chroma.items()}
        names = [*self.text, *self.lookup, *self.chroma]
        if len(set(names)) != len(names):
            raise ValueError(f"condition names must be unique across text, lookup and chroma, got {names}")
        if set(self.fuser) != set(names):
            raise ValueError(f"fuser must route exactly the conditions {sorted(names)}, got {sorted(self.fuser)}")
        unknown = set(self.attribute_dropout) - set(names)
        if unknown:
            raise ValueError(f"attribute_dropout names {sorted(unknown)} are not conditions {sorted(names)}")


def _typed(kind: type, value: object) -> object:
    return kind(**value) if isinstance(value, Mapping) else value


class ConditionProvider(nn.Module):
    """list of B ConditioningAttributes (+ the LM sequence length S) -> ConditionTensors in the LM width D.

    Dropouts act only in training mode and draw from torch's default generator, which the training loop reseeds
    from (seed, step, rank) before every batch (lit/callbacks.StepSeed): resumed runs redraw exactly, ranks differ.
    seq_len is the number of sequence steps the `add` / tiled chroma conditions must cover; None keeps each
    condition's own length (e.g. chroma prepended at the reference's length).
    """

    def __init__(self, config: ConditionerConfig):
        super().__init__()
        width = config.output_dim
        self.text = nn.ModuleDict(
            {
                name: TextConditioner(
                    encoder=text.encoder,
                    output_dim=width,
                    pooling=text.pooling,
                    max_length=text.max_length,
                    dtype=text.dtype,
                    cache_size=text.cache_size,
                )
                for name, text in config.text.items()
            }
        )
        self.lookup = nn.ModuleDict(
            {
                name: LookupConditioner(output_dim=width, vocabulary=lookup.vocabulary, hash_buckets=lookup.hash_buckets)
                for name, lookup in config.lookup.items()
            }
        )
        self.chroma = nn.ModuleDict(
            {
                name: ChromaConditioner(
                    output_dim=width,
                    sample_rate=chroma.sample_rate,
                    frame_rate=chroma.frame_rate,
                    n_fft=chroma.n_fft,
                    min_frequency=chroma.min_frequency,
                    max_frequency=chroma.max_frequency,
                    argmax=chroma.argmax,
                    filterbank=chroma.filterbank,
                    normalized=chroma.normalized,
                    silent_frames=chroma.silent_frames,
                    length=chroma.length,
                    max_duration=chroma.max_duration,
                )
                for name, chroma in config.chroma.items()
            }
        )
        self.fuser = ConditionFuser(routes=config.fuser)
        self.cfg_dropout = ClassifierFreeDropout(p=config.cfg_dropout)
        self.attribute_dropout = AttributeDropout(probabilities=config.attribute_dropout)

    def forward(self, attributes: list[ConditioningAttributes], seq_len: int | None = None) -> ConditionTensors:
        if not attributes:
            raise ValueError("attributes must hold at least one example, got an empty list")
        if seq_len is not None and seq_len < 1:
            raise ValueError(f"seq_len must be >= 1 or None, got {seq_len}")
        if self.training:
            attributes = self.attribute_dropout(attributes, )
        conditions = {}
        for name, text in self.text.items():
            conditions[name] = text(collate_texts(attributes, name))
        for name, lookup in self.lookup.items():
            conditions[name] = lookup(collate_texts(attributes, name))
        for name, chroma in self.chroma.items():
            conditions[name] = chroma(collate_wavs(attributes, name, sample_rate=chroma.sample_rate), seq_len=seq_len)
        tensors = self.fuser(conditions, seq_len=seq_len)
        if self.training and conditions:
            keep = self.cfg_dropout.keep(len(attributes), )  # [B]
            tensors = tensors.where(keep.to(next(iter(conditions.values())).mask.device))
        return tensors
