"""Text (and optional melody or audio prompt) -> music, with a trained LM and its codec.

    python generate.py checkpoint=outputs/demo/lm prompts='["calm piano", "fast organ"]' duration=8 \
        cfg_coef=3 top_k=250 top_p=0 temperature=1 seed=0

Writes one WAV, its codes (.npy, [K, T]) and a spectrogram PNG per prompt, and generation.json (every parameter and the checkpoint) to
out_dir. Bad input (unknown checkpoint, no prompts, invalid sampling parameters, unreadable audio) is one line on
stderr, exit status 1, and nothing written.
"""
import json
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
import transformers
from tqdm import tqdm

from builders import build_generation, load_lm_export
from codec.codec import Codec
from conditioners.attributes import ConditioningAttributes, WavCondition
from data.audio import AudioReadError, convert_audio, limit_peak, read_audio, write_wav
from data.manifest import read_manifest, read_sidecar
from eval.plots import save_spectrogram
from lm.generator import LMGenerator


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


def generate(cfg: DictConfig) -> Path:
    """Validates everything, generates into a temporary folder, then moves it to out_dir. Returns out_dir."""
    prompts = read_prompts(cfg)
    if cfg.duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {cfg.duration}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    out_dir = Path(cfg.out_dir)
    if out_dir.exists():
        raise FileExistsError(f"out_dir {out_dir} exists already: choose another")
    generation = build_generation(cfg)
    melody = None if cfg.melody is None else WavCondition(*read_audio(cfg.melody))
    continuation = None if cfg.continuation is None else read_audio(cfg.continuation)
    device = pick_device(cfg.device)
    lm, pattern, conditioner, train_cfg = load_lm_export(cfg.checkpoint, device)
    codec = Codec.load(cfg.codec_dir or train_cfg.codec_dir, device=device).eval()
    generator_ = LMGenerator(lm, pattern, generation)
    num_frames = int(round(cfg.duration * codec.frame_rate))
    prompt_codes = None
    if continuation is not None:
        wav = convert_audio(*continuation, codec.sample_rate, codec.channels).to(device)
        with torch.inference_mode():
            prompt_codes = codec.encode(wav[None])[:, :, :num_frames]  # [1, K, T0]

    seed = torch.Generator(device=device).manual_seed(cfg.seed)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))  # renamed to out_dir at the end
    try:
        with tqdm(total=len(prompts), unit="prompt", desc="prompts") as prompt_bar:
            for first in range(0, len(prompts), cfg.batch_size):
                batch = prompts[first:first + cfg.batch_size]
                attributes = [ConditioningAttributes(text={"description": text},
                                                     wav={} if melody is None else {"melody": melody}) for text in batch]
                with torch.inference_mode():
                    conditions = conditioner(attributes, seq_len=pattern.get_pattern(num_frames).num_steps)
                prompt = None if prompt_codes is None else prompt_codes.expand(len(batch), -1, -1)
                with tqdm(unit="step", desc="decoding", leave=False) as step_bar:
                    def progress(step: int, total: int) -> None:
                        step_bar.total = total
                        step_bar.update(step - step_bar.n)

                    codes = generator_.generate(num_frames, conditions, prompt=prompt, generator=seed,
                                                progress=progress)  # [B, K, T]
                    with torch.inference_mode():
                        audio = codec.decode(codes).float().cpu()  # [B, C, samples]
                for offset, wav in enumerate(audio):
                    name = f"{first + offset:03d}"
                    np.save(staging / f"{name}.npy", codes[offset].cpu().numpy())  # [K, T] the LM's tokens
                    write_wav(staging / f"{name}.wav", limit_peak(wav), codec.sample_rate)
                    save_spectrogram(staging / f"{name}.png", wav, codec.sample_rate, title=prompts[first + offset])
                prompt_bar.update(len(batch))
        parameters = {
            **{key: value for key, value in OmegaConf.to_container(cfg, resolve=True).items() if key != "prompts"},
            "checkpoint": str(Path(cfg.checkpoint).resolve()),
            "codec_dir": str(Path(cfg.codec_dir or train_cfg.codec_dir).resolve()),
            "prompts": {f"{index:03d}.wav": text for index, text in enumerate(prompts)},
            "num_frames": num_frames,
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
