"""Text (and optional melody or audio prompt) -> music, with a trained LM and its codec.

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
"""
import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import hydra
import numpy as np
import soundfile
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
import transformers
from tqdm import tqdm

from builders import build_codec_backend, build_decode_backend, build_generation
from conditioners.attributes import WavCondition
from data.audio import AudioReadError, limit_peak, read_audio, write_wav
from data.manifest import read_manifest, read_sidecar
from eval.plots import save_spectrogram
from pipeline import GenerationPipeline, item_seeds


def read_prompts(cfg: DictConfig) -> list[str]:
    prompts = list(cfg.prompts)
    if cfg.prompts_file is not None:
        lines = Path(cfg.prompts_file).read_text().splitlines()
        prompts += [line.strip() for line in lines if line.strip()]
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


def generate(cfg: DictConfig) -> Path:
    """Validates everything, generates into a temporary folder, then moves it to out_dir. Returns out_dir."""
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

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))  # renamed to out_dir at the end
    try:
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
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
