"""The speech pipeline: texts (and voices) -> TTS LM tokens -> multi-scale codes -> audio, in one object.
generate.py speaks through it; it is the TTS counterpart of pipeline.py's `GenerationPipeline`.

    pipeline = SpeechPipeline.load("outputs/tts_demo/tts")           # a TTS run directory or its export/
    output = pipeline.speak(["the old cat slept.", "is it raining?"], speakers=["en-gb+f4", None], seeds=[1, 2])
    output.audio[0]  # [C, samples]     output.codes[0]  # K levels [T_q]     output.finished[0]  # [EOS] reached

Each item's audio is a function of its own text, speaker and seed only: its tokens are sampled with a generator
seeded with its seed (`TTSGenerator`, one utterance at a time), and its codes are decoded alone with torch's
generator seeded with the same seed, because SNAC's decoder draws noise from it (codec/snac_generator.py). So an
item regenerates alone exactly, whatever else the call held.
"""
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import Tensor

from codec.loading import load_codec
from codec.snac import SNACCodec
from lm.hf_tts_lm import HFTTSLM
from lm.tts_format import TTSFormat
from lm.tts_generator import TTSGenerationConfig, TTSGenerator
from lm.tts_lm import TTSLM
from pipeline import item_seeds


class SpeechOutput(NamedTuple):
    audio: list[Tensor]  # per item [C, samples] float32 on the CPU, not peak-limited (lengths differ)
    codes: list[list[Tensor]]  # per item, K levels [T_q] long on the CPU, complete coarse frames only
    seeds: list[int]  # each item's seed
    finished: list[bool]  # each item reached [EOS] (False: cut at generation.max_audio_frames)


def check_request(tts_format: TTSFormat, texts: Sequence[str], speakers: Sequence[str | None] | None = None,
                  seeds: Sequence[int] | None = None) -> None:
    """Refuse texts, voices and seeds a model of `tts_format` cannot speak, naming the argument and item: no texts,
    speakers or seeds of another length, a text outside the alphabet (or empty), an unknown speaker."""
    if len(texts) == 0:
        raise ValueError("texts must hold at least one text")
    for name, values in (("speakers", speakers), ("seeds", seeds)):
        if values is not None and len(values) != len(texts):
            raise ValueError(f"{name} must give one value per text ({len(texts)}), got {len(values)}")
    for index, text in enumerate(texts):
        try:
            tts_format.normalize(text)
        except ValueError as error:
            raise ValueError(f"texts[{index}]: {error}") from None
    for index, speaker in enumerate(speakers or []):
        if speaker is not None:
            try:
                tts_format.speaker_id(speaker)
            except ValueError as error:
                raise ValueError(f"speakers[{index}]: {error}") from None


class SpeechPipeline:
    def __init__(self, model: TTSLM | HFTTSLM, tts_format: TTSFormat, codec: SNACCodec,
                 generation: TTSGenerationConfig):
        """The codec must be the multi-scale codec whose codes the format lays out (same strides and codebook
        size); `model` and `codec` are used as given (eval mode, on one device)."""
        if not isinstance(codec, SNACCodec):
            raise ValueError(f"a TTS model speaks through a multi-scale codec (SNACCodec), got {type(codec).__name__}")
        ours = {"strides": list(tts_format.pattern.strides), "card": tts_format.config.card}
        theirs = {"strides": list(codec.strides), "card": codec.cardinality}
        if ours != theirs:
            raise ValueError(f"the codec's codes (strides {theirs['strides']}, codebook size {theirs['card']}) are "
                             f"not the TTS format's (strides {ours['strides']}, card {ours['card']})")
        self.model, self.format, self.codec = model, tts_format, codec
        self.generator = TTSGenerator(model, tts_format, generation)
        self.codec_dir: Path | None = None  # set by `load`: where the codec was read from, for the record
        self.export_config: DictConfig | None = None  # set by `load`: the export's resolved config

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu", codec_dir: str | Path | None = None,
             generation: TTSGenerationConfig | None = None) -> "SpeechPipeline":
        """A TTS export (run directory or export/) and its codec (the run's codec_dir unless `codec_dir`);
        generation: sampling settings (None: the run's tts.generation)."""
        from builders import build_tts_generation, load_tts_export  # builders imports lit/, which imports pipeline

        model, tts_format, train_cfg = load_tts_export(checkpoint, device)
        codec_dir = codec_dir or train_cfg.get("codec_dir")
        if codec_dir is None:
            raise ValueError(f"checkpoint {checkpoint} names no codec_dir (its run had none): pass codec_dir")
        codec_dir = Path(codec_dir).resolve()
        try:
            pipeline = cls(model, tts_format, load_codec(codec_dir, device),
                           generation or build_tts_generation(train_cfg))
        except ValueError as error:
            raise ValueError(f"codec_dir {codec_dir}: {error}") from None
        pipeline.codec_dir, pipeline.export_config = codec_dir, train_cfg
        return pipeline

    @property
    def device(self) -> torch.device:
        return self.model.embedding.weight.device

    @property
    def speakers(self) -> list[str]:
        """The voices the model knows (its format's speaker tokens); [] for a model without speakers."""
        return list(self.format.config.speakers)

    def check(self, texts: Sequence[str], speakers: Sequence[str | None] | None = None,
              seeds: Sequence[int] | None = None) -> None:
        """Refuse a request `speak` cannot honour, naming the argument; scripts call it before writing anything."""
        check_request(self.format, texts, speakers, seeds)

    @torch.no_grad()  # not inference_mode: TTSGenerator's codes feed the codec, as in its own decode loop
    def speak(self, texts: Sequence[str], speakers: Sequence[str | None] | None = None,
              seeds: Sequence[int] | None = None, progress: Callable[[int, int], None] | None = None
              ) -> SpeechOutput:
        """Speak each text in its voice (speakers: one per text, None items or speakers=None: the model picks).

        seeds: one per text; None = item_seeds(0, len(texts)). progress(done, total) is called after each item.
        """
        self.check(texts, speakers, seeds)
        seeds = item_seeds(0, len(texts)) if seeds is None else list(seeds)
        speakers = [None] * len(texts) if speakers is None else list(speakers)
        audio, codes, finished = [], [], []
        for index, (text, speaker, seed) in enumerate(zip(texts, speakers, seeds)):
            spoken = self.generator.generate(text, torch.Generator(self.device).manual_seed(seed), speaker)
            audio.append(self.decode(spoken.codes, seed))
            codes.append(spoken.codes)
            finished.append(spoken.finished)
            if progress is not None:
                progress(index + 1, len(texts))
        return SpeechOutput(audio, codes, seeds, finished)

    def decode(self, codes: list[Tensor], seed: int) -> Tensor:
        """K levels [T_q] of one utterance -> audio [C, samples] on the CPU; the decoder's noise is drawn from
        torch's generator seeded with `seed` (and the caller's generator state left as it was)."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.codec.decode([level[None].to(self.device) for level in codes])[0].float().cpu()
