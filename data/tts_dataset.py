"""TTS training sequences: whole utterances from multi-rate token shards and their sidecar transcripts.

The shards (data/token_shards.py) hold, per item, the codec's slots at the coarse rate: codes [F, T_c] =
`lm.multirate.MultiRatePattern.to_frames` of the K levels, with `tokens.json` naming the layout
(`multirate: {strides, order}`, `cardinality`); the item's sidecar metadata carries its transcript (`text`).
Each item becomes one `TTSFormat.build` sequence: [SOH] text [EOT] [EOH] [SOS] audio [EOS].

An utterance is never cut: a sequence longer than `max_length` would teach audio that stops mid-sentence (or
text without its speech), so such items are skipped, as are items whose transcript is outside the format's
alphabet; both are counted in `skipped` and logged once when the dataset is built.

Training reads an endless stream (lit/datamodule.py): position p is item p % N of a permutation drawn from
(seed, epoch p // N), so every epoch visits each item once in a fresh, reproducible order.
"""
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from data.token_shards import read_info, read_token_shards
from lm.tts_format import TTSExample, TTSFormat

logger = logging.getLogger(__name__)


@dataclass
class TTSSequenceConfig:
    """configs/tts/*.yaml `sequences:`."""

    max_length: int = 2048  # tokens per sequence (prompt, audio and [EOS]); longer utterances are skipped
    text_field: str = "text"  # the sidecar field holding the transcript
    seed: int = 0  # the order of each epoch's permutation

    def __post_init__(self) -> None:
        if self.max_length < 6:
            raise ValueError(f"max_length must be >= 6 (the special tokens, a character and a frame), "
                             f"got {self.max_length}")


class TTSDataset(Dataset):
    """Item: a TTSExample (ids [L], loss_mask [L]). `len` is the number of kept utterances."""

    def __init__(self, shard_folder: str, tts_format: TTSFormat, config: TTSSequenceConfig, shuffle: bool):
        self.format, self.config, self.shuffle = tts_format, config, shuffle
        check_layout(shard_folder, tts_format)
        self.examples: list[tuple[str, np.ndarray]] = []  # (normalised text, frames [F, T_c])
        self.skipped: Counter[str] = Counter()
        F = tts_format.pattern.frame_size
        for item in read_token_shards(shard_folder):
            if item.codes.shape[0] != F:
                raise ValueError(f"item {item.path} in {shard_folder} has {item.codes.shape[0]} code rows, expected "
                                 f"the F={F} slots of strides {tts_format.pattern.strides}")
            if config.text_field not in item.metadata:
                raise ValueError(f"item {item.path} in {shard_folder} has no sidecar field "
                                 f"text_field={config.text_field!r}")
            try:
                text = tts_format.normalize(item.metadata[config.text_field])
            except ValueError as error:
                self._skip("text outside the alphabet", f"{item.path}: {error}")
                continue
            length = 1 + len(text) + 3 + item.num_frames * F + 1  # [SOH] text [EOT] [EOH] [SOS] audio [EOS]
            if length > config.max_length:
                self._skip("longer than max_length", f"{item.path}: {length} tokens > max_length={config.max_length}")
                continue
            self.examples.append((text, item.codes))
        if not self.examples:
            raise ValueError(f"no usable utterance in {shard_folder} (skipped: {dict(self.skipped)})")
        if self.skipped:
            logger.warning("%s: kept %d utterances, skipped %s", shard_folder, len(self.examples), dict(self.skipped))

    def _skip(self, reason: str, detail: str) -> None:
        if not self.skipped[reason]:
            logger.warning("skipping (%s) %s", reason, detail)
        self.skipped[reason] += 1

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, position: int) -> TTSExample:
        epoch, index = divmod(position, len(self.examples))
        if self.shuffle:
            index = int(np.random.default_rng([self.config.seed, epoch]).permutation(len(self.examples))[index])
        text, frames = self.examples[index]
        codes = self.format.pattern.from_frames(torch.from_numpy(np.asarray(frames, dtype=np.int64)))  # K [T_q]
        return self.format.build(text, codes)

    def collate(self, examples: list[TTSExample]) -> dict:
        """-> {"ids", "loss_mask", "attention_mask"}: [B, L], right-padded (`TTSFormat.collate`)."""
        batch = self.format.collate(examples)
        return {"ids": batch.ids, "loss_mask": batch.loss_mask, "attention_mask": batch.attention_mask}


def check_layout(shard_folder: str, tts_format: TTSFormat) -> None:
    """Refuse shards whose codec layout is not the format's, naming the key and both values."""
    info = read_info(shard_folder)
    if "multirate" not in info:
        raise ValueError(f"{shard_folder}/tokens.json has no `multirate` entry: these are not multi-rate (SNAC) "
                         f"tokens; extract them with a multi-scale codec")
    pattern, config = tts_format.pattern, tts_format.config
    theirs = {"strides": list(info["multirate"]["strides"]), "order": info["multirate"]["order"],
              "card": info["cardinality"]}
    ours = {"strides": pattern.strides, "order": pattern.order, "card": config.card}
    differences = [f"{key}: tokens {theirs[key]!r}, tts.format {ours[key]!r}"
                   for key in ours if ours[key] != theirs[key]]
    if differences:
        raise ValueError(f"tokens in {shard_folder} do not fit tts.format: {'; '.join(differences)}")
