"""Text (and optional melody or audio prompt) -> music, with a trained LM and its codec; or text -> speech, with a
trained TTS LM (`train.py stage=tts`) and its SNAC codec.

    python generate.py checkpoint=outputs/demo/lm prompts='["calm piano", "fast organ"]' duration=8 \
        cfg_coef=3 top_k=250 top_p=0 temperature=1 seed=0

    python generate.py checkpoint=RUN prompts='["a", "b"]' seeds='[7, 8]' negative='["drums", null]'
    python generate.py checkpoint=RUN prompts='["a"]' stream=true     # each WAV grows while it is generated
    python generate.py checkpoint=BASE adapters='[RUN/export/adapter]' prompts='["a"]'   # a LoRA fine-tune on BASE

Writes one WAV, its codes (.npy, [K, T]) and a spectrogram PNG per prompt, and generation.json (every parameter,
the checkpoint and each file's seed) to out_dir. Each file depends on its own prompt and seed only, so
`prompts='["b"]' seeds='[8]'` regenerates 001.wav above exactly. Bad input (unknown checkpoint, no prompts,
invalid sampling parameters, seeds or negative of the wrong length, a melody for a model without a melody
conditioner, unreadable audio) is one line on stderr, exit status 1, and nothing written.

Speech. A checkpoint whose export holds tts.safetensors (`builders.is_tts_export`; a music LM's holds
lm.safetensors) is spoken through `SpeechPipeline`:

    python generate.py checkpoint=outputs/tts_demo/tts prompts='["the old cat slept."]' speaker=en-gb+f4
    python generate.py checkpoint=RUN prompts_manifest=outputs/tts_demo/data/test max_prompts=20 seed=1

prompts / prompts_file are texts; prompts_manifest reads each sidecar's `text` and `speaker` (entries by a voice the
model does not know, e.g. the test split's held-out speakers, are skipped and counted; max_prompts applies after);
`speaker=` (every text) or `speakers='[...]'` (one per text, null: the model picks) set the voices. temperature,
top_k, top_p and max_audio_frames apply when given, else the run's tts.generation; seed / seeds as for music. The
music-only keys (duration, cfg_coef, negative, melody, adapters, ... `MUSIC_ONLY`) are refused by name. Writes per
text NNN.wav, NNN.npy (the codes as [F, T_c] coarse-frame slots, data.extract_tokens' layout) and NNN.png, then
generation.json (every parameter, seeds, speakers, `finished` per item) and transcripts.jsonl, eval.speech's
listing ({"audio", "text", "speaker"} per line), so `python -m eval.speech generated=OUT_DIR` scores the folder.
"""
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import soundfile
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
import transformers
from tqdm import tqdm

from builders import (build_codec_backend, build_decode_backend, build_generation, is_tts_export, plain,
                      tts_export_directory)
from conditioners.attributes import WavCondition
from data.audio import AudioReadError, limit_peak, read_audio, write_wav
from data.manifest import read_manifest, read_sidecar
from eval.plots import save_spectrogram
from lm.tts_generator import TTSGenerationConfig
from pipeline import GenerationPipeline, item_seeds
from speech_pipeline import SpeechPipeline

logger = logging.getLogger(__name__)
# keys that only a music LM reads, refused when given for a TTS checkpoint, and the reverse (null by default)
MUSIC_ONLY = ("duration", "cfg_coef", "two_step_cfg", "context_frames", "extend_stride_frames", "negative", "melody",
              "continuation", "stream", "batch_size", "adapters", "adapter_weights", "weights", "compile",
              "int8_kv_cache", "codec_backend")
TTS_ONLY = ("speaker", "speakers", "max_audio_frames")
TTS_SAMPLING = ("temperature", "top_k", "top_p", "max_audio_frames")  # replace the run's tts.generation when given


def listed_prompts(cfg: DictConfig) -> list[str]:
    """prompts, then the non-blank lines of prompts_file."""
    prompts = list(cfg.prompts)
    if cfg.prompts_file is not None:
        lines = Path(cfg.prompts_file).read_text().splitlines()
        prompts += [line.strip() for line in lines if line.strip()]
    return prompts


def read_prompts(cfg: DictConfig) -> list[str]:
    prompts = listed_prompts(cfg)
    if cfg.prompts_manifest is not None:
        prompts += [read_sidecar(entry.path)["description"] for entry in read_manifest(cfg.prompts_manifest)]
    if cfg.max_prompts is not None:
        prompts = prompts[:cfg.max_prompts]
    if not prompts:
        raise ValueError("no prompts: give prompts='[\"...\"]', prompts_file=FILE or prompts_manifest=SPLIT")
    return prompts


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def item_list(cfg: DictConfig, key: str, count: int) -> list | None:
    """A per-prompt list config key (None, one value for every prompt, or one per prompt), checked for length."""
    value = cfg[key]
    if value is None:
        return None
    values = list(value) if OmegaConf.is_list(value) else [value] * count
    if len(values) != count:
        raise ValueError(f"{key} must give one value per prompt ({count}), got {len(values)}")
    return values


def stream_to_files(pipeline: GenerationPipeline, request: dict, paths: list[Path]) -> tuple[Tensor, Tensor]:
    """Generate with `pipeline.stream`, appending each chunk to one float WAV per item as soon as it is decoded (a
    player can open them while they grow). Returns (codes [B, K, T], audio [B, C, samples]) for the final files,
    which are then written as the offline mode writes them (16-bit, peak-limited)."""
    sample_rate, channels = pipeline.codec.sample_rate, pipeline.codec.channels
    print(f"streaming into {paths[0].parent}", file=sys.stderr)
    with ExitStack() as stack:
        writers = [stack.enter_context(soundfile.SoundFile(path, "w", sample_rate, channels, subtype="FLOAT"))
                   for path in paths]
        chunks = []
        for chunk in pipeline.stream(**request):
            for writer, wav in zip(writers, chunk.audio):  # [C, n]
                writer.write(wav.T.numpy())
                writer.flush()
            chunks.append(chunk)
    return torch.cat([chunk.codes for chunk in chunks], dim=-1), torch.cat([chunk.audio for chunk in chunks], dim=-1)


@contextmanager
def staging_folder(out_dir: Path) -> Iterator[Path]:
    """A hidden folder beside out_dir to write into, renamed to out_dir when the block succeeds, removed if not."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        yield staging
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def given_keys() -> set[str]:
    """The top-level config keys the command line set (Hydra's overrides); none when called without Hydra."""
    if not HydraConfig.initialized():
        return set()
    return {override.split("=", 1)[0].lstrip("+~").split(".")[0] for override in HydraConfig.get().overrides.task}


def generate(cfg: DictConfig) -> Path:
    """Validates everything, generates into a temporary folder, then moves it to out_dir. Returns out_dir."""
    if is_tts_export(cfg.checkpoint):
        return speak(cfg)
    tts_keys = [key for key in TTS_ONLY if cfg[key] is not None]
    if tts_keys:
        raise ValueError(f"{', '.join(tts_keys)}: for a TTS checkpoint, but {cfg.checkpoint} is not one")
    prompts = read_prompts(cfg)
    seeds = item_list(cfg, "seeds", len(prompts)) or item_seeds(cfg.seed, len(prompts))
    negative = item_list(cfg, "negative", len(prompts))
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    out_dir = Path(cfg.out_dir)
    if out_dir.exists():
        raise FileExistsError(f"out_dir {out_dir} exists already: choose another")
    generation = build_generation(cfg)
    melody = None if cfg.melody is None else WavCondition(*read_audio(cfg.melody))
    continuation = None if cfg.continuation is None else read_audio(cfg.continuation)
    pipeline = GenerationPipeline.load(cfg.checkpoint, pick_device(cfg.device), cfg.codec_dir, generation,
                                       build_decode_backend(cfg), build_codec_backend(cfg), list(cfg.adapters),
                                       None if cfg.adapter_weights is None else list(cfg.adapter_weights))
    pipeline.check(len(prompts), cfg.duration, melody, continuation, seeds, negative)  # before anything is written
    if cfg.stream:
        pipeline.check_streams()

    with staging_folder(out_dir) as staging:
        with tqdm(total=len(prompts), unit="prompt", desc="prompts") as prompt_bar:
            for first in range(0, len(prompts), cfg.batch_size):
                batch = slice(first, first + cfg.batch_size)
                with tqdm(unit="step", desc="decoding", leave=False) as step_bar:
                    def progress(step: int, total: int) -> None:
                        step_bar.total = total
                        step_bar.update(step - step_bar.n)

                    request = dict(prompts=prompts[batch], duration=cfg.duration, melody=melody,
                                   continuation=continuation, seeds=seeds[batch],
                                   negative=None if negative is None else negative[batch], progress=progress)
                    names = [f"{index:03d}" for index in range(len(prompts))[batch]]
                    if cfg.stream:
                        codes, audio = stream_to_files(pipeline, request, [staging / f"{name}.wav" for name in names])
                    else:
                        output = pipeline.generate(**request)
                        codes, audio = output.codes, output.audio
                for name, item_codes, wav, prompt in zip(names, codes, audio, prompts[batch]):
                    np.save(staging / f"{name}.npy", item_codes.cpu().numpy())  # [K, T] the LM's tokens
                    write_wav(staging / f"{name}.wav", limit_peak(wav), pipeline.codec.sample_rate)
                    save_spectrogram(staging / f"{name}.png", wav, pipeline.codec.sample_rate, title=prompt)
                prompt_bar.update(len(names))
        parameters = {
            **{key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items()
               if key not in ("prompts", "seeds", "negative")},
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "codec_dir": str(pipeline.codec_dir),
            "prompts": {f"{index:03d}.wav": text for index, text in enumerate(prompts)},
            "seeds": {f"{index:03d}.wav": seed for index, seed in enumerate(seeds)},
            "negative": None if negative is None else {f"{index:03d}.wav": text for index, text in enumerate(negative)},
            "num_frames": pipeline.num_frames(cfg.duration),
        }
        (staging / "generation.json").write_text(json.dumps(parameters, indent=2))
    return out_dir


def read_texts(cfg: DictConfig, known: list[str]) -> tuple[list[str], list[str | None], int]:
    """A TTS checkpoint's texts, their voices and the manifest entries skipped: prompts and prompts_file lines (no
    voice), then prompts_manifest's sidecar `text` and `speaker` (an entry by a voice outside `known` is skipped;
    a model without speakers is given none), cut to max_prompts; then speaker or speakers replace the voices."""
    texts = listed_prompts(cfg)
    voices: list[str | None] = [None] * len(texts)
    skipped = 0
    if cfg.prompts_manifest is not None:
        for entry in read_manifest(cfg.prompts_manifest):
            sidecar = read_sidecar(entry.path)
            if not isinstance(sidecar.get("text"), str):
                raise ValueError(f"prompts_manifest entry {entry.path} has no sidecar `text`")
            speaker = sidecar.get("speaker") if known else None
            if speaker is not None and speaker not in known:
                skipped += 1
                continue
            texts.append(sidecar["text"])
            voices.append(speaker)
    if skipped:
        logger.warning("skipped %d entries of %s: speakers this model does not know (it knows %s)", skipped,
                       cfg.prompts_manifest, known)
    if cfg.max_prompts is not None:
        texts, voices = texts[:cfg.max_prompts], voices[:cfg.max_prompts]
    if not texts:
        raise ValueError("no texts: give prompts='[\"...\"]', prompts_file=FILE or prompts_manifest=SPLIT"
                         + (f" ({skipped} manifest entries skipped: unknown voices)" if skipped else ""))
    if cfg.speaker is not None and cfg.speakers is not None:
        raise ValueError("give speaker (one voice for every text) or speakers (one per text), not both")
    if cfg.speaker is not None:
        voices = [cfg.speaker] * len(texts)
    elif cfg.speakers is not None:
        voices = item_list(cfg, "speakers", len(texts))
    return texts, voices, skipped


def speak(cfg: DictConfig) -> Path:
    """generate() for a TTS checkpoint (see the module docstring): validates everything, speaks into a temporary
    folder, then moves it to out_dir. Returns out_dir."""
    given = given_keys()
    music = [key for key in MUSIC_ONLY if key in given]
    if music:
        raise ValueError(f"{', '.join(music)}: music-only, but checkpoint {cfg.checkpoint} is a TTS export")
    out_dir = Path(cfg.out_dir)
    if out_dir.exists():
        raise FileExistsError(f"out_dir {out_dir} exists already: choose another")
    run_cfg = OmegaConf.load(tts_export_directory(cfg.checkpoint) / "train_config.yaml")
    generation = TTSGenerationConfig(**{**plain(run_cfg.tts.generation),
                                        **{key: cfg[key] for key in TTS_SAMPLING if key in given}})
    pipeline = SpeechPipeline.load(cfg.checkpoint, pick_device(cfg.device), cfg.codec_dir, generation)
    texts, voices, skipped = read_texts(cfg, pipeline.speakers)
    seeds = item_list(cfg, "seeds", len(texts)) or item_seeds(cfg.seed, len(texts))
    pipeline.check(texts, voices, seeds)  # before anything is written

    with staging_folder(out_dir) as staging:
        with tqdm(total=len(texts), unit="text", desc="texts") as bar:
            output = pipeline.speak(texts, voices, seeds, progress=lambda done, total: bar.update(done - bar.n))
        names = [f"{index:03d}.wav" for index in range(len(texts))]
        listing = []
        for name, codes, wav, text, voice in zip(names, output.codes, output.audio, texts, voices):
            stem = staging / name[:-len(".wav")]
            np.save(stem.with_suffix(".npy"), pipeline.format.pattern.to_frames([level[None] for level in codes])[0]
                    .numpy())  # [F, T_c]
            write_wav(stem.with_suffix(".wav"), limit_peak(wav), pipeline.codec.sample_rate)
            save_spectrogram(stem.with_suffix(".png"), wav, pipeline.codec.sample_rate, title=text)
            listing.append(json.dumps({"audio": name, "text": text, "speaker": voice}))
        (staging / "transcripts.jsonl").write_text("".join(line + "\n" for line in listing), encoding="utf-8")
        parameters = {
            **{key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items()
               if key not in (*MUSIC_ONLY, *TTS_SAMPLING, "prompts", "seeds", "speaker", "speakers")},
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "codec_dir": str(pipeline.codec_dir),
            "generation": asdict(pipeline.generator.config),
            "prompts": dict(zip(names, texts)),
            "speakers": dict(zip(names, voices)),
            "seeds": dict(zip(names, output.seeds)),
            "finished": dict(zip(names, output.finished)),
            "skipped_manifest_entries": skipped,
        }
        (staging / "generation.json").write_text(json.dumps(parameters, indent=2))
    return out_dir


@hydra.main(config_path="configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    transformers.utils.logging.disable_progress_bar()  # stderr is for errors: one line each
    try:
        out_dir = generate(cfg)
    except (ValueError, FileNotFoundError, FileExistsError, AudioReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
