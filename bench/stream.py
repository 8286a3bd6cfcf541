"""Streaming generation vs offline generation of the same clip, same process and threads: time to first audio and
the real-time factor.

    python -m bench.stream                 # the demo's model sizes (configs/lm/tiny, configs/codec/tiny, MiniLM)
    python -m bench.stream --seconds 16 --repeats 5

The weights are random: decode speed does not depend on them. Offline, the first audio exists when the whole
clip is generated and decoded; streaming yields each frame once it is final (`GenerationPipeline.stream`).
Real-time factor = seconds of audio / seconds of wall time (above 1: faster than real time). The last line is JSON.
"""
import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from builders import build_codec, build_conditioner, build_lm, build_lm_training, build_pattern
from lit.lm_module import BatchConditioner, LMLightningModule
from lm.generator import GenerationConfig
from pipeline import GenerationPipeline

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PROMPT = "a slow bach chorale played on church organ in g major, 72 bpm"


def demo_sized_export(directory: Path) -> Path:
    """A random LM + codec export with the demo's sizes (experiment=demo's lm, codec and conditioner)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["stage=lm", "experiment=demo", f"codec_dir={directory / 'codec'}"])
    build_codec(cfg).save(directory / "codec")
    module = LMLightningModule(build_lm(cfg), build_pattern(cfg), build_lm_training(cfg),
                               conditioner=BatchConditioner(build_conditioner(cfg)))
    module.save(directory / "lm")
    OmegaConf.save(cfg, directory / "lm" / "train_config.yaml", resolve=True)
    return directory / "lm"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-frames", type=int, default=8, help="frames per streamed chunk (the pipeline default)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        pipeline = GenerationPipeline.load(demo_sized_export(Path(scratch)), generation=GenerationConfig())
    pipeline.generate([PROMPT], duration=0.5)  # warm-up
    offline, first_audio, streamed = [], [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        pipeline.generate([PROMPT], args.seconds, seeds=[repeat])
        offline.append(time.perf_counter() - start)
        start = time.perf_counter()
        for index, _ in enumerate(pipeline.stream([PROMPT], args.seconds, seeds=[repeat],
                                                               chunk_frames=args.chunk_frames)):
            if index == 0:
                first_audio.append(time.perf_counter() - start)
        streamed.append(time.perf_counter() - start)
    median = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
    result = {"threads": args.threads, "seconds": args.seconds, "repeats": args.repeats,
              "chunk_frames": args.chunk_frames,
              "offline_first_audio_s": round(median(offline), 3), "stream_first_audio_s": round(median(first_audio), 3),
              "first_audio_speedup": round(median(offline) / median(first_audio), 1),
              "offline_real_time_factor": round(args.seconds / median(offline), 2),
              "stream_real_time_factor": round(args.seconds / median(streamed), 2)}
    print(f"{args.seconds:g} s of audio: first audio after {result['stream_first_audio_s']} s streaming vs "
          f"{result['offline_first_audio_s']} s offline; real-time factor {result['stream_real_time_factor']} "
          f"streaming, {result['offline_real_time_factor']} offline")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
