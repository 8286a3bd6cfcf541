"""The text-to-speech token sequence: text characters, then multi-rate codec codes, in one vocabulary.

One utterance is one sequence (VyvoTTS / Orpheus structure, drawn with an example in docs/tts_format.md):

    [SOH] [SPK] t0 t1 ... [EOT] [EOH] [SOS] a0 a1 ... [EOS]
    SOH start of human, SPK the speaker's token (optional), EOT end of text, EOH end of human,
    SOS start of speech, EOS end of speech

t are characters of the normalised text, a the codec codes flattened by `lm.multirate.MultiRatePattern`
(F tokens per coarse frame, Orpheus order by default). [SPK] is one token per voice of the closed set `speakers`
(the training split's); a sequence without it leaves the voice to the model. The vocabulary is four disjoint
blocks:

    [0, 6)                        special tokens (`SpecialToken`, PAD first)
    [6, 6 + C)                    the C characters of `characters`
    [6 + C, 6 + C + M * card)     audio codes: code c of offset block m is 6 + C + m * card + c, where m is the
                                  code's slot in its frame (M = F, Orpheus's +4096 * (index % 7)) or its level
                                  (M = K), per `audio_offsets`
    [A, A + S)                    the S speakers, in the order of `speakers` (A: the end of the audio block)

Training: `build` gives ids [L] and a loss mask [L] marking the target tokens: the audio codes, [EOS] (so the
model learns to stop) unless `loss_on_end_of_speech` is off, and the text with its [EOT] if `loss_on_text`.
The logits at position i predict ids[i + 1], so the loss reads targets ids[1:] where loss_mask[1:].
Generation: `prompt` gives the ids up to [SOS]; `generated_codes` reads the sampled tokens back to codes.

Text normalisation (`normalize`): Unicode NFKD with combining marks dropped (é -> e), typographic quotes and
dashes to ASCII, lowercase, runs of whitespace to one space, ends stripped. A character still outside
`characters` is refused with a ValueError naming it and its position; so is text that normalises to nothing.
"""
import unicodedata
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

from lm.multirate import MultiRatePattern

DEFAULT_CHARACTERS = " abcdefghijklmnopqrstuvwxyz0123456789'\",.?!:;-"
AUDIO_OFFSETS = ("slot", "level")
_TO_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                           "\u2014": "-", "\u2212": "-"})


def _ids(*tokens: int) -> Tensor:
    return torch.tensor(tokens, dtype=torch.long)


class SpecialToken(IntEnum):
    PAD = 0
    START_OF_HUMAN = 1
    END_OF_TEXT = 2
    END_OF_HUMAN = 3
    START_OF_SPEECH = 4
    END_OF_SPEECH = 5


@dataclass  # not frozen: OmegaConf makes a frozen dataclass's node read-only, and configs/tts/ override it
class TTSFormatConfig:
    strides: tuple[int, ...] = (4, 2, 1)  # the codec's strides, coarse first (SNAC 24 kHz)
    card: int = 4096  # codes per codebook level
    order: str = "depth_first"  # slot order within a coarse frame, lm.multirate.ORDERS
    audio_offsets: str = "slot"  # "slot": an id block per frame slot (Orpheus); "level": one per codebook level
    characters: str = DEFAULT_CHARACTERS  # the text alphabet, after normalisation
    loss_on_end_of_speech: bool = True  # [EOS] is a target (the model learns when to stop)
    loss_on_text: bool = False  # the text characters and [EOT] are targets too
    speakers: tuple[str, ...] = ()  # one token per voice (stage=tts fills it from the training split); () = none


@dataclass(frozen=True)
class TTSExample:
    ids: Tensor  # [L] long
    loss_mask: Tensor  # [L] bool, True at target tokens


@dataclass(frozen=True)
class TTSBatch:
    ids: Tensor  # [B, L] long, right-padded with PAD
    loss_mask: Tensor  # [B, L] bool, False in the padding
    attention_mask: Tensor  # [B, L] bool, True at real tokens


@dataclass(frozen=True)
class ParsedExample:
    text: str  # normalised
    codes: list[Tensor]  # K tensors [T_q] long
    speaker: str | None  # the speaker token's voice, None for a sequence without one


@dataclass(frozen=True)
class GeneratedAudio:
    codes: list[Tensor]  # K tensors [T_q] long, complete coarse frames only
    finished: bool  # [EOS] was generated (False: the generation hit its length limit)
    dropped: int  # tokens of an incomplete last coarse frame, not returned


class TTSFormat:
    """Builds and parses TTS sequences for one codec layout and alphabet (see the module docstring)."""

    def __init__(self, config: TTSFormatConfig):
        if config.card < 1:
            raise ValueError(f"card must be >= 1, got {config.card}")
        if config.audio_offsets not in AUDIO_OFFSETS:
            raise ValueError(f"audio_offsets must be one of {AUDIO_OFFSETS}, got {config.audio_offsets!r}")
        characters = config.characters
        if not characters or len(set(characters)) != len(characters):
            raise ValueError(f"characters must be non-empty without repeats, got {characters!r}")
        if characters != self._fold(characters) or any(char.isspace() and char != " " for char in characters):
            raise ValueError(f"characters must be normalised (lowercase ASCII-folded, space the only blank), "
                             f"got {characters!r}")
        if len(set(config.speakers)) != len(config.speakers) or not all(config.speakers):
            raise ValueError(f"speakers must be non-empty names without repeats, got {list(config.speakers)}")
        self.config = config
        self.pattern = MultiRatePattern(config.strides, order=config.order)
        self.text_start = len(SpecialToken)
        self.audio_start = self.text_start + len(characters)
        self._char_ids = {char: self.text_start + i for i, char in enumerate(characters)}
        slot = config.audio_offsets == "slot"
        block_of_slot = torch.arange(self.pattern.frame_size) if slot else self.pattern.slot_level  # [F]
        self.slot_offsets = self.audio_start + block_of_slot * config.card  # [F] id of code 0 in each slot
        self.speaker_start = self.audio_start + (int(block_of_slot.max()) + 1) * config.card
        self._speaker_ids = {speaker: self.speaker_start + i for i, speaker in enumerate(config.speakers)}
        self.vocab_size = self.speaker_start + len(config.speakers)

    # -- text --------------------------------------------------------------------------------------------------

    @staticmethod
    def _fold(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text.translate(_TO_ASCII))
        return "".join(char for char in decomposed if not unicodedata.combining(char)).lower()

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it; raises ValueError naming `text` if empty or out of the alphabet."""
        normalised = " ".join(self._fold(text).split())
        if not normalised:
            raise ValueError(f"text must hold at least one character after normalisation, got {text!r}")
        for position, char in enumerate(normalised):
            if char not in self._char_ids:
                raise ValueError(f"text has {char!r} (U+{ord(char):04X}) at position {position} of the normalised "
                                 f"{normalised!r}, outside the characters {self.config.characters!r}")
        return normalised

    def encode_text(self, text: str) -> Tensor:
        """text -> ids [C_text] in the text block."""
        return torch.tensor([self._char_ids[char] for char in self.normalize(text)], dtype=torch.long)

    def decode_text(self, ids: Tensor) -> str:
        """ids [C_text] in the text block -> the normalised text."""
        outside = (ids < self.text_start) | (ids >= self.audio_start)
        if outside.any():
            position = int(outside.nonzero()[0])
            raise ValueError(f"text ids must lie in [{self.text_start}, {self.audio_start}), got {int(ids[position])} "
                             f"at position {position}")
        return "".join(self.config.characters[i - self.text_start] for i in ids.tolist())

    # -- speakers ----------------------------------------------------------------------------------------------

    def speaker_id(self, speaker: str) -> int:
        """A voice of `speakers` -> its token id; raises ValueError naming an unknown one and the known ones."""
        if speaker not in self._speaker_ids:
            known = list(self.config.speakers) or "none: this format has no speaker tokens"
            raise ValueError(f"speaker {speaker!r} is unknown; the known speakers are {known}")
        return self._speaker_ids[speaker]

    def _speaker_part(self, speaker: str | None) -> Tensor:
        """[SPK] as ids [1], or [0] ids for no speaker."""
        return _ids() if speaker is None else _ids(self.speaker_id(speaker))

    # -- audio -------------------------------------------------------------------------------------------------

    def encode_audio(self, codes: list[Tensor]) -> Tensor:
        """K codes [T_q] in [0, card) -> ids [T_c * F] in the audio block, one coarse frame after another."""
        for q, level in enumerate(codes):
            if level.dim() != 1 or level.dtype != torch.long:
                raise ValueError(f"codes[{q}] must be a 1-D long tensor [T_q], got {level.dtype} {list(level.shape)}")
            if level.numel() and (level.min() < 0 or level.max() >= self.config.card):
                raise ValueError(f"codes[{q}] must lie in [0, card={self.config.card}), "
                                 f"got [{int(level.min())}, {int(level.max())}]")
        if self.pattern.num_frames(codes) < 1:
            raise ValueError("codes must hold at least one coarse frame")
        stream = self.pattern.flatten([level[None] for level in codes])[0]  # [T_c * F]
        return stream + self.slot_offsets.repeat(stream.numel() // self.pattern.frame_size)

    def _audio_to_codes(self, ids: Tensor) -> Tensor:
        """ids [N] of audio positions 0 .. N-1 -> codes [N]; every id must lie in its slot's block."""
        offsets = self.slot_offsets.repeat(-(-ids.numel() // self.pattern.frame_size))[: ids.numel()]  # [N]
        codes = ids - offsets
        outside = (codes < 0) | (codes >= self.config.card)
        if outside.any():
            position = int(outside.nonzero()[0])
            low = int(offsets[position])
            raise ValueError(f"audio id {int(ids[position])} at audio position {position} (slot "
                             f"{position % self.pattern.frame_size}) is outside [{low}, {low + self.config.card})")
        return codes

    def decode_audio(self, ids: Tensor) -> list[Tensor]:
        """ids [T_c * F] of whole coarse frames -> K codes [T_q]; every id must lie in its slot's block."""
        if ids.numel() == 0 or ids.numel() % self.pattern.frame_size:
            raise ValueError(f"audio ids must be one or more coarse frames of {self.pattern.frame_size} tokens, "
                             f"got {ids.numel()} tokens")
        codes = self._audio_to_codes(ids)
        return [level[0] for level in self.pattern.unflatten(codes[None], special_token=-1).codes]

    # -- sequences ---------------------------------------------------------------------------------------------

    def build(self, text: str, codes: list[Tensor], speaker: str | None = None) -> TTSExample:
        """text, K codes [T_q] and a voice of `speakers` (None: no speaker token) -> [SOH] [SPK] text [EOT] [EOH]
        [SOS] audio [EOS] as ids [L], with its loss mask [L]; the speaker token is never a target."""
        text_ids, audio_ids = self.encode_text(text), self.encode_audio(codes)
        parts = [_ids(SpecialToken.START_OF_HUMAN), self._speaker_part(speaker), text_ids,
                 _ids(SpecialToken.END_OF_TEXT), _ids(SpecialToken.END_OF_HUMAN, SpecialToken.START_OF_SPEECH),
                 audio_ids, _ids(SpecialToken.END_OF_SPEECH)]
        on_text, on_end = self.config.loss_on_text, self.config.loss_on_end_of_speech
        targets = [False, False, on_text, on_text, False, True, on_end]
        loss_mask = torch.cat([torch.full((part.numel(),), target) for part, target in zip(parts, targets)])
        return TTSExample(torch.cat(parts), loss_mask)

    def parse(self, ids: Tensor) -> ParsedExample:
        """ids [L] of `build` (trailing PAD allowed) -> the normalised text, the K codes [T_q] and the speaker."""
        not_pad = (ids != SpecialToken.PAD).nonzero()
        real = ids[: int(not_pad[-1]) + 1] if not_pad.numel() else ids[:0]
        if real.numel() < 2 or real[0] != SpecialToken.START_OF_HUMAN or real[-1] != SpecialToken.END_OF_SPEECH:
            raise ValueError("ids must start with START_OF_HUMAN and end with END_OF_SPEECH (before padding)")
        end_of_text = (real == SpecialToken.END_OF_TEXT).nonzero()
        if not end_of_text.numel():
            raise ValueError("ids hold no END_OF_TEXT")
        end = int(end_of_text[0])
        speaker_index = int(real[1]) - self.speaker_start
        speaker = self.config.speakers[speaker_index] if 0 <= speaker_index < len(self.config.speakers) else None
        text_start = 1 if speaker is None else 2
        if end == text_start:
            raise ValueError("ids hold no text between START_OF_HUMAN (and its speaker) and END_OF_TEXT")
        if real[end + 1: end + 3].tolist() != [SpecialToken.END_OF_HUMAN, SpecialToken.START_OF_SPEECH]:
            raise ValueError(f"END_OF_TEXT at position {end} must be followed by END_OF_HUMAN, START_OF_SPEECH")
        return ParsedExample(self.decode_text(real[text_start:end]), self.decode_audio(real[end + 3: -1]), speaker)

    def collate(self, examples: list[TTSExample]) -> TTSBatch:
        """Right-pads examples with PAD to the longest: ids, loss mask and attention mask [B, L]."""
        if not examples:
            raise ValueError("examples must hold at least one example")
        length = max(example.ids.numel() for example in examples)
        ids = torch.full((len(examples), length), int(SpecialToken.PAD), dtype=torch.long)
        loss_mask = torch.zeros(len(examples), length, dtype=torch.bool)
        attention_mask = torch.zeros(len(examples), length, dtype=torch.bool)
        for row, example in enumerate(examples):
            size = example.ids.numel()
            ids[row, :size], loss_mask[row, :size], attention_mask[row, :size] = example.ids, example.loss_mask, True
        return TTSBatch(ids, loss_mask, attention_mask)

    # -- generation --------------------------------------------------------------------------------------------

    def prompt(self, text: str, speaker: str | None = None) -> Tensor:
        """text and a voice (None: the model picks one) -> ids [P] = [SOH] [SPK] text [EOT] [EOH] [SOS], the sequence
        a generator continues with audio."""
        return torch.cat([_ids(SpecialToken.START_OF_HUMAN), self._speaker_part(speaker), self.encode_text(text),
                          _ids(SpecialToken.END_OF_TEXT, SpecialToken.END_OF_HUMAN, SpecialToken.START_OF_SPEECH)])

    def generated_codes(self, generated: Tensor) -> GeneratedAudio:
        """The tokens sampled after `prompt` [N] -> codes, reading up to the first [EOS] (or all N if none).

        A last coarse frame cut short (by the length limit, or an [EOS] the model placed mid-frame) is dropped and
        counted in `dropped`; any other non-audio token, or an audio token outside its slot's block, raises.
        """
        ends = (generated == SpecialToken.END_OF_SPEECH).nonzero()
        finished = bool(ends.numel())
        audio = generated[: int(ends[0])] if finished else generated
        self._audio_to_codes(audio)
        whole = audio.numel() // self.pattern.frame_size * self.pattern.frame_size
        if whole == 0:
            raise ValueError(f"generated tokens hold no complete coarse frame of {self.pattern.frame_size} tokens "
                             f"before END_OF_SPEECH, got {audio.numel()} audio tokens")
        return GeneratedAudio(self.decode_audio(audio[:whole]), finished, dropped=audio.numel() - whole)
