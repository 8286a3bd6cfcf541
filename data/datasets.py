"""Training datasets: random audio segments for the codec, fixed windows of codes for the LM.

Both draw item `index` of epoch `epoch` from a generator seeded with (seed, epoch, index) alone, so the same
triple gives the same sample whatever the DataLoader worker count or order (see EpochDataset for how an endless
sampler reads later epochs).
"""
import logging
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from data.audio import AudioReadError, convert_audio, normalize_rms, read_audio
from data.captions import CaptionConfig, as_words, make_caption
from data.manifest import AudioEntry
from data.token_shards import TokenItem, read_token_shards

logger = logging.getLogger(__name__)


def item_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def sampling_probabilities(weights: list[float]) -> np.ndarray:
    probabilities = np.asarray(weights, dtype=np.float64)
    return probabilities / probabilities.sum()


class EpochDataset(Dataset):
    """A dataset of random draws whose item (epoch, index) is fixed by the seed.

    Positions past the end continue into later epochs: position p is item p % len of epoch `epoch + p // len`,
    so an endless sampler (lit/datamodule.py) reads a fresh, reproducible stream with no set_epoch calls.
    """

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_and_index(self, position: int) -> tuple[int, int]:
        extra_epochs, index = divmod(position, len(self))
        return self.epoch + extra_epochs, index


@dataclass
class SegmentConfig:
    segment_seconds: float  # length of each training segment
    sample_rate: int  # target rate (the codec's)
    channels: int  # target channel count (the codec's)
    num_segments: int  # segments per epoch (the dataset's length)
    short_files: Literal["pad", "skip"] = "pad"  # files shorter than a segment: zero-pad them, or never draw them
    normalize_db: float | None = None  # RMS target in dBFS per segment; None keeps the recorded level
    max_read_retries: int = 5  # unreadable files are redrawn this many times before the item fails
    seed: int = 0

    def __post_init__(self):
        if self.segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be > 0, got {self.segment_seconds}")
        if self.num_segments <= 0:
            raise ValueError(f"num_segments must be > 0, got {self.num_segments}")
        if self.short_files not in ("pad", "skip"):
            raise ValueError(f"short_files must be 'pad' or 'skip', got {self.short_files!r}")


class SegmentDataset(EpochDataset):
    """Random segments of the manifest's files, drawn with probability proportional to duration x weight.

    Item: {"wav": [C, T] float32 (T = segment_seconds * sample_rate), "length": frames of real audio}.
    """

    def __init__(self, entries: list[AudioEntry], config: SegmentConfig):
        self.config = config
        if config.short_files == "skip":
            entries = [entry for entry in entries if entry.duration >= config.segment_seconds]
        if not entries:
            raise ValueError("entries is empty (after dropping files shorter than segment_seconds "
                             f"= {config.segment_seconds} when short_files='skip')")
        self.entries = entries
        self.probabilities = sampling_probabilities(
            [entry.duration * (1.0 if entry.weight is None else entry.weight) for entry in entries])
        self.segment_frames = int(round(config.segment_seconds * config.sample_rate))


    def __len__(self) -> int:
        return self.config.num_segments

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        config = self.config
        rng = item_generator(config.seed, *self._epoch_and_index(index))
        for _ in range(config.max_read_retries + 1):
            entry = self.entries[rng.choice(len(self.entries), p=self.probabilities)]
            start = rng.random() * max(0.0, entry.duration - config.segment_seconds)
            try:
                wav, sample_rate = read_audio(entry.path, start_seconds=start, duration_seconds=config.segment_seconds)
            except AudioReadError as error:
                logger.warning("redrawing segment %d: %s", index, error)
                continue
            wav = convert_audio(wav, sample_rate, config.sample_rate, config.channels)[:, :self.segment_frames]
            if config.normalize_db is not None:
                wav = normalize_rms(wav, target_db=config.normalize_db)
            length = wav.shape[-1]
            wav = torch.nn.functional.pad(wav, (0, self.segment_frames - length))  # [C, T]
            return {"wav": wav, "length": torch.tensor(length)}
        raise AudioReadError(f"segment {index}: {config.max_read_retries + 1} draws hit unreadable files")


def collate_segments(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """-> {"wav": [B, C, T], "length": [B]}"""
    return {"wav": torch.stack([item["wav"] for item in items]),
            "length": torch.stack([item["length"] for item in items])}


@dataclass
class TokenWindowConfig:
    window_frames: int  # T, frames per training window
    num_windows: int  # windows per epoch (the dataset's length)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    attribute_fields: tuple[str, ...] = ("genre", "instrument", "key", "bpm", "moods")  # returned as attributes
    seed: int = 0

    def __post_init__(self):
        if self.window_frames <= 0:
            raise ValueError(f"window_frames must be > 0, got {self.window_frames}")
        if self.num_windows <= 0:
            raise ValueError(f"num_windows must be > 0, got {self.num_windows}")
        if isinstance(self.caption, dict):
            self.caption = CaptionConfig(**self.caption)
        self.attribute_fields = tuple(self.attribute_fields)


class TokenWindowDataset(EpochDataset):
    """Windows of `window_frames` frames from pre-extracted code shards (see data.extract_tokens).

    Items shorter than a window are never drawn. Item: {"codes": LongTensor [K, T], "description": str,
    "attributes": {field: str | None}}.
    """

    def __init__(self, shard_folder: str, config: TokenWindowConfig):
        self.config = config
        self.items: list[TokenItem] = [item for item in read_token_shards(shard_folder)
                                       if item.num_frames >= config.window_frames]
        if not self.items:
            raise ValueError(f"no item in {shard_folder} has window_frames={config.window_frames} frames")
        self.probabilities = sampling_probabilities([item.num_frames for item in self.items])


    def __len__(self) -> int:
        return self.config.num_windows

    def __getitem__(self, index: int) -> dict:
        config = self.config
        rng = item_generator(config.seed, *self._epoch_and_index(index))
        item = self.items[rng.choice(len(self.items), p=self.probabilities)]
        start = int(rng.integers(0, item.num_frames - config.window_frames + 1))
        codes = item.codes[:, start:start + config.window_frames]  # [K, T]
        caption_rng = random.Random(int(rng.integers(2**63)))
        return {"codes": torch.from_numpy(np.asarray(codes, dtype=np.int64)),
                "description": make_caption(item.metadata, config.caption, caption_rng),
                "attributes": {name: as_words(item.metadata.get(name)) for name in config.attribute_fields}}


def collate_token_windows(items: list[dict]) -> dict:
    """-> {"codes": LongTensor [B, K, T], "description": list[str], "attributes": list[dict]}"""
    return {"codes": torch.stack([item["codes"] for item in items]),
            "description": [item["description"] for item in items],
            "attributes": [item["attributes"] for item in items]}

