"""The generation pipeline: captions (with a melody, an audio prompt, negative captions) -> codes -> audio, in one
object. generate.py, eval.adherence, the LM's validation samples and the notebooks all generate through it.

    pipeline = GenerationPipeline.load("outputs/demo/lm")           # any LM export, or what interop.convert wrote
    output = pipeline.generate(["calm piano", "fast organ"], duration=8, seeds=[1, 2])
    output.audio  # [B, C, samples]     output.codes  # [B, K, T]

Each item's tokens are a function of its own conditions, seed and the generation settings: its sampling noise
comes from a generator seeded with its seed, and its guidance branch is its own null (or negative) condition, so
it does not matter what else shares the batch.
"""
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import DictConfig
from torch import Tensor

from codec.backends.config import CodecBackendConfig
from codec.backends.config import with_backend as with_codec_backend
from codec.codec import Codec
from conditioners.attributes import ConditioningAttributes, WavCondition
from conditioners.conditioner import ConditionProvider
from conditioners.tensors import ConditionTensors
from data.audio import convert_audio
from lm.backends.config import DecodeBackendConfig, with_backend
from lm.generator import GenerationConfig, LMGenerator
from lm.lm import LMModel
from lm.lora import merge_adapters
from lm.patterns import PatternProvider

Prompt = str | ConditioningAttributes | None  # a caption, full attributes, or None for the unconditional output
MELODY = "melody"  # the wave attribute a melody (chroma) conditioner reads


def item_seeds(seed: int, count: int, first: int = 0) -> list[int]:
    """The default seed of items first .. first + count - 1 of a run seeded with `seed`: item i of a larger run
    can be regenerated alone with seeds=[item_seeds(seed, 1, i)[0]]."""
    return [seed * 100_003 + index for index in range(first, first + count)]


class GenerationOutput(NamedTuple):
    audio: Tensor  # [B, C, samples] float32 on the CPU, not peak-limited
    codes: Tensor  # [B, K, T] long
    seeds: list[int]  # each item's sampling seed


class StreamChunk(NamedTuple):
    audio: Tensor  # [B, C, n * hop_length] float32 on the CPU
    codes: Tensor  # [B, K, n] the n frames it decodes


class GenerationPipeline:
    def __init__(self, lm: LMModel, pattern: PatternProvider, conditioner: ConditionProvider, codec: Codec,
                 generation: GenerationConfig, backend: DecodeBackendConfig | None = None,
                 codec_backend: CodecBackendConfig | None = None):
        """backend: how the LM's decode steps run; codec_backend: how the codec encodes and decodes (None: the
        reference paths); `lm` and `codec` themselves are never changed."""
        if (codec.num_codebooks, codec.cardinality) != (lm.config.num_codebooks, lm.config.card):
            raise ValueError(f"the codec has {codec.num_codebooks} x {codec.cardinality} codes but the LM predicts "
                             f"{lm.config.num_codebooks} x {lm.config.card}")
        self.lm, self.pattern, self.conditioner = lm, pattern, conditioner
        self.codec = with_codec_backend(codec, codec_backend or CodecBackendConfig())
        self.generator = LMGenerator(with_backend(lm, backend or DecodeBackendConfig()), pattern, generation)
        self.codec_dir: Path | None = None  # set by `load`: where the codec was read from, for the record
        self.export_config: DictConfig | None = None  # set by `load`: the export's resolved config (its data paths)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu", codec_dir: str | Path | None = None,
             generation: GenerationConfig | None = None, backend: DecodeBackendConfig | None = None,
             codec_backend: CodecBackendConfig | None = None, adapters: Sequence[str | Path] = (),
             adapter_weights: Sequence[float] | None = None) -> "GenerationPipeline":
        """An LM export (run directory or export/) and its codec (the one it was trained on unless `codec_dir`).
        adapters: LoRA adapter directories merged into the LM, each scaled by its adapter_weights entry (lm.lora)."""
        from builders import load_lm_export  # here, not at the top: builders imports lit/, which imports this module

        lm, pattern, conditioner, train_cfg = load_lm_export(checkpoint, device)
        if adapters or adapter_weights is not None:
            lm = merge_adapters(lm, adapters, adapter_weights).eval()
        codec_dir = Path(codec_dir or train_cfg.codec_dir).resolve()
        pipeline = cls(lm, pattern, conditioner, Codec.load(codec_dir, device=device), generation or GenerationConfig(),
                       backend, codec_backend)
        pipeline.codec_dir, pipeline.export_config = codec_dir, train_cfg
        return pipeline

    @property
    def device(self) -> torch.device:
        return self.lm.embedding.weight.device

    def num_frames(self, duration: float) -> int:
        if duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {duration}")
        return max(1, round(duration * self.codec.frame_rate))

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Prompt], duration: float, melody: WavCondition | None = None,
                 continuation: tuple[Tensor, int] | None = None, seeds: Sequence[int] | None = None,
                 negative: Sequence[str | None] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> GenerationOutput:
        """Generate `duration` seconds for each prompt.

        melody:       a reference recording for every prompt (a model with a melody conditioner); any rate and
                      channel count is mixed to mono and resampled as the conditioner needs (as AudioCraft's
                      convert_audio does), so no rate or channel count is refused.
        continuation: (wav [C, T], sample_rate): an audio prompt whose codes are kept verbatim, then continued;
                      it must fit in `duration` and in one window of the generator (context_frames).
        duration:     any length: past the model's window (context_frames) generation continues in windows.
        seeds:        one sampling seed per prompt; None = item_seeds(0, len(prompts)).
        negative:     one caption per prompt to guide away from (None items: the null condition, as without it).
        """
        codes = None
        for codes, _ in self._code_stream(prompts, duration, melody, continuation, seeds, negative, progress):
            pass
        return GenerationOutput(audio=self.codec.decode(codes).float().cpu(), codes=codes,
                                seeds=self._seeds(seeds, len(prompts)))

    @torch.inference_mode()
    def stream(self, prompts: Sequence[Prompt], duration: float, melody: WavCondition | None = None,
               continuation: tuple[Tensor, int] | None = None, seeds: Sequence[int] | None = None,
               negative: Sequence[str | None] | None = None, progress: Callable[[int, int], None] | None = None,
               chunk_frames: int = 8) -> Iterator[StreamChunk]:
        """`generate`'s audio and codes in chunks of n frames, each yielded as soon as its n >= chunk_frames frames
        are final (the last chunk may be shorter; with the delay pattern, frame t is final at step t + max delay).
        The codec decodes them in streaming mode, so the chunks concatenated equal the offline decode of the same
        codes; that needs a codec that streams (causal, constant or replicate padding). Larger chunks cost the
        codec less per frame and give the first audio later."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.check_streams()
        decoded = 0
        code_stream = self._code_stream(prompts, duration, melody, continuation, seeds, negative, progress)
        first = next(code_stream)  # encodes the continuation, which must not happen in the codec's streaming mode
        with self.codec.streaming(len(prompts)):
            for codes, final in itertools.chain([first], code_stream):
                if final - decoded >= chunk_frames or (final == codes.shape[-1] and final > decoded):
                    chunk = codes[:, :, decoded:final]
                    yield StreamChunk(audio=self.codec.decode(chunk).float().cpu(), codes=chunk.clone())
                    decoded = final

    def _code_stream(self, prompts: Sequence[Prompt], duration: float, melody: WavCondition | None,
                     continuation: tuple[Tensor, int] | None, seeds: Sequence[int] | None,
                     negative: Sequence[str | None] | None, progress: Callable[[int, int], None] | None
                     ) -> Iterator[tuple[Tensor, int]]:
        """LMGenerator.stream for these prompts: (codes [B, K, T], leading frames final)."""
        B, num_frames = len(prompts), self.num_frames(duration)
        seeds = self._seeds(seeds, B)
        self.check(B, duration, melody, continuation, seeds, negative)
        conditions, negative_conditions = self.conditions(prompts, num_frames, melody, negative)
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        yield from self.generator.stream(num_frames, conditions, prompt=self._prompt(continuation, B, num_frames),
                                         generator=generators, progress=progress, negative=negative_conditions)

    def conditions(self, prompts: Sequence[Prompt], num_frames: int, melody: WavCondition | None = None,
                   negative: Sequence[str | None] | None = None) -> tuple[ConditionTensors, ConditionTensors | None]:
        """The LM's conditions [B, ...] for `prompts` and those of their negative captions (None without), computed
        in one conditioner call as `generate` does (the serve batcher conditions its rows with it)."""
        B = len(prompts)
        attributes = [self._attributes(prompt, melody) for prompt in prompts]
        if negative is not None:
            attributes += [ConditioningAttributes(text={} if text is None else {"description": text})
                           for text in negative]
        conditions = self.conditioner(attributes, seq_len=self.pattern.get_pattern(num_frames).num_steps)
        return conditions.rows(slice(0, B)), None if negative is None else conditions.rows(slice(B, 2 * B))

    @staticmethod
    def _seeds(seeds: Sequence[int] | None, count: int) -> list[int]:
        return item_seeds(0, count) if seeds is None else list(seeds)

    def check(self, count: int, duration: float, melody: WavCondition | None = None,
              continuation: tuple[Tensor, int] | None = None, seeds: Sequence[int] | None = None,
              negative: Sequence[str | None] | None = None) -> None:
        """Refuse a request `generate` cannot honour, naming the argument; scripts call it before writing anything."""
        if count == 0:
            raise ValueError("prompts must hold at least one prompt")
        num_frames = self.num_frames(duration)
        if seeds is not None and len(seeds) != count:
            raise ValueError(f"seeds must give one seed per prompt ({count}), got {len(seeds)}")
        if negative is not None and len(negative) != count:
            raise ValueError(f"negative must give one caption (or None) per prompt ({count}), got {len(negative)}")
        if melody is not None and MELODY not in self.conditioner.chroma:
            raise ValueError("melody was given but this model has no melody conditioner (conditioner.chroma has no "
                             "'melody'): it would be ignored")
        if continuation is not None:
            continuation_frames = math.ceil(continuation[0].shape[-1] / continuation[1] * self.codec.frame_rate)
            if continuation_frames > num_frames:
                raise ValueError(f"continuation is {continuation[0].shape[-1] / continuation[1]:.2f} s, longer than "
                                 f"duration {num_frames / self.codec.frame_rate:.2f} s")
            context = self.generator.config.context_frames
            if context is not None and continuation_frames > context:
                raise ValueError(f"continuation is {continuation[0].shape[-1] / continuation[1]:.2f} s, longer than "
                                 f"the model's window (context_frames={context}: "
                                 f"{context / self.codec.frame_rate:.2f} s), which must hold it")

    def check_streams(self) -> None:
        """Refuse streaming with a codec that cannot decode chunk by chunk exactly."""
        seanet = self.codec.config.seanet
        if not seanet.causal or seanet.pad_mode == "reflect":
            raise ValueError(f"stream needs a codec that streams (causal, constant or replicate padding); this one "
                             f"has causal={seanet.causal}, pad_mode={seanet.pad_mode!r}: generate without streaming")

    @staticmethod
    def _attributes(prompt: Prompt, melody: WavCondition | None) -> ConditioningAttributes:
        if isinstance(prompt, ConditioningAttributes):
            return prompt
        return ConditioningAttributes(text={} if prompt is None else {"description": prompt},
                                      wav={} if melody is None else {MELODY: melody})

    def _prompt(self, continuation: tuple[Tensor, int] | None, batch_size: int, num_frames: int) -> Tensor | None:
        """The continuation's codes [B, K, T0], or None."""
        if continuation is None:
            return None
        wav, sample_rate = continuation
        wav = convert_audio(wav, sample_rate, self.codec.sample_rate, self.codec.channels).to(self.device)
        return self.codec.encode(wav[None])[:, :, :num_frames].expand(batch_size, -1, -1)  # [B, K, T0]
