"""Codec speed: encode + decode of a 10 s clip, codeclm `encodec_24khz` vs the `encodec` package's 24 kHz model.

    python -m bench.codec_speed [--threads N] [--runs R]

Both models are built untrained in this process (same architecture, 32 codebooks = 24 kbps) and timed on
the same clip with the same thread count; the median of R runs is reported. Streaming: the same preset with
constant padding (reflect padding cannot stream; same compute) encodes and decodes chunks of 1 and of 5 frames,
reported as milliseconds per frame against the frame duration (real time needs cost < duration).
Final line: JSON with ours_s, peer_s, ratio (ours / peer), stream_ms_per_frame_chunk{1,5}, frame_ms.
"""

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from codec import Codec, CodecConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def median_seconds(functions: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each function; runs alternate between them so load changes hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in functions}
    for function in functions.values():
        function()  # warm-up
    for _ in range(runs):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def encodec_24khz_config() -> CodecConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return CodecConfig(**compose(config_name=None, overrides=["+codec=encodec_24khz"]).codec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads for both")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model (median reported)")
    parser.add_argument("--stream-frames", type=int, default=75, help="frames streamed (75 = 1 s); a multiple of 5")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the encodec package uses the deprecated weight_norm
        from encodec import EncodecModel

        peer = EncodecModel.encodec_model_24khz(pretrained=False).eval()
    peer.set_target_bandwidth(24.0)
    config = encodec_24khz_config()
    ours = Codec(config).eval()
    wav = 0.1 * torch.randn(1, 1, 10 * ours.sample_rate)

    with torch.inference_mode():
        seconds = median_seconds(
            {"ours": lambda: ours.decode(ours.encode(wav)), "peer": lambda: peer.decode(peer.encode(wav))}, args.runs
        )
        ours_s, peer_s = seconds["ours"], seconds["peer"]

        config.seanet.pad_mode = "constant"
        streamer = Codec(config).eval()
        audio = wav[..., : args.stream_frames * streamer.hop_length]
        stream_ms_per_frame = {}
        for chunk_frames in (1, 5):
            chunks = torch.split(audio, chunk_frames * streamer.hop_length, dim=-1)

            def stream() -> None:
                with streamer.streaming(batch_size=1):
                    for chunk in chunks:
                        streamer.decode(streamer.encode(chunk))

            stream_s = median_seconds({"stream": stream}, max(1, args.runs // 2))["stream"]
            stream_ms_per_frame[f"stream_ms_per_frame_chunk{chunk_frames}"] = round(1000 * stream_s / args.stream_frames, 3)

    result = {
        "clip_s": 10.0,
        "threads": args.threads,
        "ours_s": round(ours_s, 4),
        "peer_s": round(peer_s, 4),
        "ratio": round(ours_s / peer_s, 3),
        **stream_ms_per_frame,
        "frame_ms": round(1000 / streamer.frame_rate, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
