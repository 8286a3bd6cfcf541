"""Codec speed: encode + decode of a 10 s clip, codeclm `encodec_24khz` vs the `encodec` package's 24 kHz model.

    python -m bench.codec_speed [--threads N] [--runs R]

Both models are built untrained in this process (same architecture, 32 codebooks = 24 kbps) and timed on
the same clip with the same thread count; the median of R runs is reported. Ours runs twice: on the reference
path (`ours_s`) and on the `time_major` backend (codec/backends/, `ours_fast_s`); `ratio` is the backend's time over
the peer's, `ratio_reference` the reference path's.

Streaming: the same preset with constant padding (reflect padding cannot stream; same compute) encodes and
decodes chunks of 1 and of 5 frames, reported as milliseconds per frame against the frame duration `frame_ms`
(real time needs cost < duration): `stream_ms_per_frame_chunk{1,5}` on the backend,
`reference_stream_ms_per_frame_chunk{1,5}` on the reference path, `stream_decode_ms_per_frame_chunk1` the
backend's decode alone (what a generation stream runs).

iSTFT decoder (`decoder.kind: istft`, base.yaml's Vocos-sized head, with the same encoder and quantizer):
`istft_s` (offline, backend: time-major encoder and quantizer, reference iSTFT decoder) and
`istft_stream_decode_ms_per_frame_chunk1`.

Final line: JSON with the keys above plus clip_s and threads.
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
from torch import Tensor

from builders import build_codec
from codec import Codec
from codec.backends.config import CodecBackendConfig, with_backend

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TIME_MAJOR = CodecBackendConfig(kind="time_major")


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


def encodec_24khz(*overrides: str) -> Codec:
    """The `encodec_24khz` preset, untrained, in eval mode; `overrides` as `codec.seanet.pad_mode=constant`."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return build_codec(compose(config_name=None, overrides=["+codec=encodec_24khz", *overrides])).eval()


def stream_ms_per_frame(codec: Codec, audio: Tensor, chunk_frames: int, runs: int, decode_only: bool = False) -> float:
    """Milliseconds per frame to stream `audio` [1, C, T] through encode + decode (or decode alone) in chunks."""
    num_frames = audio.shape[-1] // codec.hop_length
    if decode_only:
        chunks = torch.split(codec.encode(audio), chunk_frames, dim=-1)
    else:
        chunks = torch.split(audio, chunk_frames * codec.hop_length, dim=-1)

    def stream() -> None:
        with codec.streaming(batch_size=1):
            for chunk in chunks:
                codec.decode(chunk if decode_only else codec.encode(chunk))

    return round(1000 * median_seconds({"stream": stream}, runs)["stream"] / num_frames, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads for all")
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
    ours = encodec_24khz()
    fast = with_backend(ours, TIME_MAJOR)
    wav = 0.1 * torch.randn(1, 1, 10 * ours.sample_rate)
    result: dict[str, float] = {"clip_s": 10.0, "threads": args.threads}

    with torch.inference_mode():
        seconds = median_seconds({
            "ours": lambda: ours.decode(ours.encode(wav)),
            "ours_fast": lambda: fast.decode(fast.encode(wav)),
            "peer": lambda: peer.decode(peer.encode(wav)),
        }, args.runs)
        result |= {f"{name}_s": round(value, 4) for name, value in seconds.items()}
        result["ratio"] = round(seconds["ours_fast"] / seconds["peer"], 3)
        result["ratio_reference"] = round(seconds["ours"] / seconds["peer"], 3)

        streamer = encodec_24khz("codec.seanet.pad_mode=constant")
        audio = wav[..., : args.stream_frames * streamer.hop_length]
        stream_runs = max(1, args.runs // 2)
        for name, codec in (("", with_backend(streamer, TIME_MAJOR)), ("reference_", streamer)):
            for chunk_frames in (1, 5):
                result[f"{name}stream_ms_per_frame_chunk{chunk_frames}"] = stream_ms_per_frame(
                    codec, audio, chunk_frames, stream_runs)
        result["stream_decode_ms_per_frame_chunk1"] = stream_ms_per_frame(
            with_backend(streamer, TIME_MAJOR), audio, 1, stream_runs, decode_only=True)

        istft = with_backend(encodec_24khz("codec.decoder.kind=istft", "codec.seanet.pad_mode=constant"), TIME_MAJOR)
        istft_s = median_seconds({"istft": lambda: istft.decode(istft.encode(wav))}, args.runs)["istft"]
        result["istft_s"] = round(istft_s, 4)
        result["istft_stream_decode_ms_per_frame_chunk1"] = stream_ms_per_frame(
            istft, audio, 1, stream_runs, decode_only=True)
    result["frame_ms"] = round(1000 / streamer.frame_rate, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
