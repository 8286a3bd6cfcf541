"""TTS training sequences: whole utterances from multi-rate token shards and their sidecar transcripts.

The shards (data/token_shards.py) hold, per item, the codec's slots at the coarse rate: codes [F, T_c] =
`lm.multirate.MultiRatePattern.to_frames` of the K levels, with `tokens.json` naming the layout
(`multirate: {strides, order}`, `cardinality`); the item's sidecar metadata carries its transcript (`text`) and
its voice (`speaker`). Each item becomes one `TTSFormat.build` sequence: [SOH] [SPK] text [EOT] [EOH] [SOS] audio
[EOS].

Speakers: with a format that has speaker tokens (`speakers`, which stage=tts fills with `training_speakers`), every
item's sidecar must name its voice; a voice outside the format's set (a held-out speaker) is skipped and counted.
`speaker_dropout` of the items leave the token out (drawn per position, reproducibly from `seed`), so the model
also learns to speak without one, picking a voice itself; a format without speakers never writes the token.

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

from data.token_shards import TokenItem, read_info, read_token_shards
from lm.tts_format import TTSExample, TTSFormat

logger = logging.getLogger(__name__)


@dataclass
class TTSSequenceConfig:
    """configs/tts/*.yaml `sequences:`."""

    max_length: int = 2048  # tokens per sequence (prompt, audio and [EOS]); longer utterances are skipped
    text_field: str = "text"  # the sidecar field holding the transcript
    seed: int = 0  # the order of each epoch's permutation and the speaker dropout draws
    speaker_field: str | None = "speaker"  # the sidecar field naming the voice; None: a format without speakers
    speaker_dropout: float = 0.1  # share of sequences without their speaker token

    def __post_init__(self) -> None:
        if not 0.0 <= self.speaker_dropout <= 1.0:
            raise ValueError(f"speaker_dropout must be in [0, 1], got {self.speaker_dropout}")
        if self.max_length < 6:
            raise ValueError(f"max_length must be >= 6 (the special tokens, a character and a frame), "
                             f"got {self.max_length}")


class TTSDataset(Dataset):
    """Item: a TTSExample (ids [L], loss_mask [L]). `len` is the number of kept utterances."""

    def __init__(self, shard_folder: str, tts_format: TTSFormat, config: TTSSequenceConfig, shuffle: bool):
        self.format, self.config, self.shuffle = tts_format, config, shuffle
        check_layout(shard_folder, tts_format)
        speakers = set(tts_format.config.speakers)
        if speakers and config.speaker_field is None:
            raise ValueError("tts.format has speakers but sequences.speaker_field is None: name the sidecar field "
                             "holding each item's voice")
        self.examples: list[tuple[str, np.ndarray, str | None]] = []  # (normalised text, frames [F, T_c], speaker)
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
            speaker = item_speaker(item, config.speaker_field, shard_folder) if speakers else None
            if speaker is not None and speaker not in speakers:
                self._skip("speaker outside tts.format.speakers", f"{item.path}: speaker {speaker!r}")
                continue
            # [SOH] [SPK] text [EOT] [EOH] [SOS] audio [EOS], [SPK] counted even where dropout may leave it out
            length = 1 + (speaker is not None) + len(text) + 3 + item.num_frames * F + 1
            if length > config.max_length:
                self._skip("longer than max_length", f"{item.path}: {length} tokens > max_length={config.max_length}")
                continue
            self.examples.append((text, item.codes, speaker))
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
        text, frames, speaker = self.examples[index]
        if np.random.default_rng([self.config.seed, position, 1]).random() < self.config.speaker_dropout:
            speaker = None  # this sequence goes without its speaker token
        codes = self.format.pattern.from_frames(torch.from_numpy(np.asarray(frames, dtype=np.int64)))  # K [T_q]
        return self.format.build(text, codes, speaker)

    def collate(self, examples: list[TTSExample]) -> dict:
        """-> {"ids", "loss_mask", "attention_mask"}: [B, L], right-padded (`TTSFormat.collate`)."""
        batch = self.format.collate(examples)
        return {"ids": batch.ids, "loss_mask": batch.loss_mask, "attention_mask": batch.attention_mask}


def item_speaker(item: TokenItem, speaker_field: str, shard_folder: str) -> str:
    """The voice an item's sidecar names; raises naming the item and the field if it names none."""
    speaker = item.metadata.get(speaker_field)
    if not isinstance(speaker, str) or not speaker:
        raise ValueError(f"item {item.path} in {shard_folder} has no sidecar field speaker_field={speaker_field!r} "
                         f"(got {speaker!r}); without speakers set tts.sequences.speaker_field=null")
    return speaker


def training_speakers(shard_folder: str, speaker_field: str | None) -> list[str]:
    """The voices of a token folder's items, sorted and distinct: `tts.format.speakers` of a stage=tts run ([] for
    speaker_field None). Every item must name one."""
    if speaker_field is None:
        return []
    return sorted({item_speaker(item, speaker_field, shard_folder) for item in read_token_shards(shard_folder)})


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
