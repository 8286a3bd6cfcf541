"""Objective codec evaluation per bitrate, against Opus at the same bitrates (DAC paper Table 3 format).

    python -m eval.codec_eval --checkpoint CODEC_DIR --audio DIR_OR_MANIFEST --out OUT_DIR

CODEC_DIR is a directory written by `Codec.save`. The audio is a folder (searched recursively for .wav/.flac)
or a JSONL manifest with one {"path": ...} per line (relative paths resolve against the manifest's folder).
Each file (or, with --window-seconds S, each whole S-second window of it: more clips for the rates) is converted
to the codec's rate and channel count, then, for every bitrate, coded by the codec with
the matching number of codebooks and by Opus at the same bitrates (ffmpeg + libopus, which stops at 6 kbps: a
lower-rate codec is put next to Opus's lowest rates with --opus-bitrates 6 8), and scored with SI-SDR, mel
distance, multi-resolution STFT distance, ViSQOL (see eval/audio_metrics.py) and the pitch metrics of
eval/pitch.py: chroma cosine and key agreement. Two rows bound the pitch metrics: `reference` (each clip against
itself: the ceiling, 1 and 1) and `other clip` (each clip against the one before it, the first against the
last: the floor that music with other notes scores).
Writes OUT_DIR/codec_eval.json (per clip and averaged) and OUT_DIR/codec_eval.md (the averaged table).
"""
import argparse
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from codec.codec import Codec
from data.audio import convert_audio, read_audio
from eval.audio_metrics import mel_distance, si_sdr, stft_distance, visqol
from eval.opus import MIN_BITRATE_KBPS, opus_round_trip
from eval.pitch import chroma_cosine, key_agreement
from eval.plots import save_reconstruction

AUDIO_SUFFIXES = (".wav", ".flac")
METRICS = ("si_sdr", "mel_distance", "stft_distance", "visqol", "chroma_cosine", "key_agreement")
PITCH_BOUNDS = ("reference", "other clip")  # systems scored on the pitch metrics only


@dataclass
class Score:
    """One clip coded by one system; None where a metric is not computed (ViSQOL skipped, bounds rows)."""
    clip: str                    # the file, or FILE@START_SECONDS for a window
    system: str                  # "codec", "opus", or one of PITCH_BOUNDS
    kbps: float | None           # None for PITCH_BOUNDS
    si_sdr: float | None         # dB, higher is better
    mel_distance: float | None   # lower is better
    stft_distance: float | None  # lower is better
    visqol: float | None         # MOS-LQO 1..5, higher is better
    chroma_cosine: float | None  # higher is better, 1 = same pitch classes in every sounding frame
    key_agreement: float | None  # 1 = the key estimator names the same key for both, else 0


def list_audio(source: Path) -> list[Path]:
    """Audio files of a folder (recursive, sorted) or of a JSONL manifest of {"path": ...} lines."""
    if source.is_dir():
        files = sorted(path for path in source.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
    elif source.is_file():
        files = []
        for line_number, line in enumerate(source.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            entry = json.loads(line)
            if "path" not in entry:
                raise ValueError(f"{source}:{line_number}: manifest line has no 'path'")
            path = Path(entry["path"])
            files.append(path if path.is_absolute() else source.parent / path)
    else:
        raise FileNotFoundError(f"--audio {source} is neither a folder nor a manifest file")
    if not files:
        raise ValueError(f"--audio {source} lists no .wav or .flac files")
    return files


def default_bitrates(codec: Codec) -> list[float]:
    """The codec's configured bandwidths, or else the bitrates of 1, 2, 4, ... codebooks and of all of them."""
    if codec.config.bandwidths:
        return list(codec.config.bandwidths)
    kbps_per_codebook = codec.frame_rate * math.log2(codec.cardinality) / 1000
    counts = sorted({2**i for i in range(int(math.log2(codec.num_codebooks)) + 1)} | {codec.num_codebooks})
    return [count * kbps_per_codebook for count in counts]


def score(clip: str, system: str, kbps: float, estimate: Tensor, reference: Tensor, sample_rate: int,
          with_visqol: bool) -> Score:
    """estimate, reference: [C, T]."""
    return Score(
        clip=clip,
        system=system,
        kbps=kbps,
        si_sdr=si_sdr(estimate, reference).mean().item(),
        mel_distance=mel_distance(estimate, reference, sample_rate).item(),
        stft_distance=stft_distance(estimate, reference).item(),
        visqol=visqol(estimate, reference, sample_rate) if with_visqol else None,
        **pitch_scores(estimate, reference, sample_rate),
    )


def pitch_scores(estimate: Tensor, reference: Tensor, sample_rate: int) -> dict[str, float]:
    """estimate, reference: [C, T]."""
    return {"chroma_cosine": chroma_cosine(estimate, reference, sample_rate).item(),
            "key_agreement": key_agreement(estimate, reference, sample_rate)}


def bound_score(clip: str, system: str, estimate: Tensor, reference: Tensor, sample_rate: int) -> Score:
    """A PITCH_BOUNDS row: estimate, reference [C, T] cropped to the shorter of the two."""
    T = min(estimate.shape[-1], reference.shape[-1])
    return Score(clip=clip, system=system, kbps=None, si_sdr=None, mel_distance=None, stft_distance=None,
                 visqol=None, **pitch_scores(estimate[..., :T], reference[..., :T], sample_rate))


def read_clips(files: list[Path], sample_rate: int, channels: int, window_seconds: float | None
               ) -> Iterator[tuple[str, Tensor]]:
    """(name, wav [C, T]) per file converted to the codec's rate and channels, or, with window_seconds, per whole
    window of that length (named FILE@START_SECONDS; a file's last partial window is left out)."""
    for path in files:
        wav, file_rate = read_audio(path)
        wav = convert_audio(wav, file_rate, sample_rate, channels)
        if window_seconds is None:
            yield str(path), wav
            continue
        window = round(window_seconds * sample_rate)
        for start in range(0, wav.shape[-1] - window + 1, window):
            yield f"{path}@{start / sample_rate:g}", wav[:, start:start + window]


@torch.no_grad()
def evaluate(codec: Codec, files: list[Path], bitrates: list[float], opus_bitrates: list[float],
             with_visqol: bool, window_seconds: float | None = None) -> list[Score]:
    """Scores of the codec at each of `bitrates`, of Opus at each of `opus_bitrates` and the PITCH_BOUNDS, per clip
    (file or window, see read_clips)."""
    clips = list(read_clips(files, codec.sample_rate, codec.channels, window_seconds))
    if not clips:
        raise ValueError(f"--window-seconds {window_seconds:g} is longer than every file")
    scores = []
    for index, (name, wav) in enumerate(clips):
        T = wav.shape[-1]
        scores.append(bound_score(name, "reference", wav, wav, codec.sample_rate))
        if len(clips) > 1:  # the floor: the clip before (the last one for the first)
            scores.append(bound_score(name, "other clip", clips[index - 1][1], wav, codec.sample_rate))
        for kbps in bitrates:
            codes = codec.encode(wav.unsqueeze(0), codec.bandwidth_to_num_codebooks(kbps))  # [1, K', F]
            decoded = codec.decode(codes)[0, :, :T]
            scores.append(score(name, "codec", kbps, decoded, wav, codec.sample_rate, with_visqol))
        for kbps in opus_bitrates:
            opus = opus_round_trip(wav, codec.sample_rate, kbps)
            scores.append(score(name, "opus", kbps, opus, wav, codec.sample_rate, with_visqol))
    return scores


def average(scores: list[Score]) -> list[dict]:
    """One row per (system, kbps), the PITCH_BOUNDS last: each metric averaged over clips."""
    rows = []
    systems = {(s.system, s.kbps) for s in scores}
    order = sorted(key for key in systems if key[0] not in PITCH_BOUNDS) + [
        key for key in ((bound, None) for bound in PITCH_BOUNDS) if key in systems]
    for system, kbps in order:
        group = [s for s in scores if s.system == system and s.kbps == kbps]
        row = {"system": system, "kbps": kbps, "clips": len(group)}
        for metric in METRICS:
            values = [getattr(s, metric) for s in group]
            row[metric] = None if None in values else sum(values) / len(values)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = ("| system | kbps | clips | SI-SDR dB (higher) | mel dist (lower) | STFT dist (lower) | ViSQOL (higher) "
              "| chroma cosine (higher) | key agreement (higher) |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = ["n/a" if row[m] is None else f"{row[m]:.2f}" for m in METRICS]
        kbps = "" if row["kbps"] is None else f"{row['kbps']:g}"
        lines.append(f"| {row['system']} | {kbps} | {row['clips']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="codec directory written by Codec.save")
    parser.add_argument("--audio", type=Path, required=True, help="folder of .wav/.flac or JSONL manifest")
    parser.add_argument("--out", type=Path, required=True, help="folder for codec_eval.json and codec_eval.md")
    parser.add_argument("--bitrates", type=float, nargs="+", help="kbps; default: the codec's bandwidths")
    parser.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (about 1 s of CPU per audio second)")
    parser.add_argument("--opus-bitrates", type=float, nargs="+",
                        help=f"kbps of the Opus reference; default: those of --bitrates that Opus supports "
                             f"(>= {MIN_BITRATE_KBPS:g})")
    parser.add_argument("--no-opus", action="store_true", help="skip the Opus reference (needs ffmpeg)")
    parser.add_argument("--figure", type=float, metavar="SECONDS",
                        help="also write OUT_DIR/reconstruction.png: the first SECONDS of the first clip, reference "
                             "above decoded at the top bitrate (mel and chroma)")
    parser.add_argument("--window-seconds", type=float,
                        help="score every whole window of this length as its own clip (default: whole files)")
    args = parser.parse_args(argv)
    try:
        codec = Codec.load(args.checkpoint)
        files = list_audio(args.audio)
        bitrates = args.bitrates or default_bitrates(codec)
        for kbps in bitrates:
            codec.bandwidth_to_num_codebooks(kbps)
        opus_bitrates = [] if args.no_opus else args.opus_bitrates or [kbps for kbps in bitrates
                                                                         if kbps >= MIN_BITRATE_KBPS]
        for kbps in opus_bitrates:
            if kbps < MIN_BITRATE_KBPS:
                raise ValueError(f"--opus-bitrates must be >= {MIN_BITRATE_KBPS:g} kbps (libopus), got {kbps:g}")
        below_opus = [kbps for kbps in bitrates if kbps < MIN_BITRATE_KBPS]
        if below_opus and not args.no_opus and not args.opus_bitrates:
            print(f"codec_eval: no Opus reference at {below_opus} kbps (libopus minimum {MIN_BITRATE_KBPS:g}); "
                  f"--opus-bitrates sets its own", file=sys.stderr)
        if args.window_seconds is not None and args.window_seconds <= 0:
            raise ValueError(f"--window-seconds must be > 0, got {args.window_seconds:g}")
        scores = evaluate(codec, files, bitrates, opus_bitrates, with_visqol=not args.no_visqol,
                          window_seconds=args.window_seconds)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"codec_eval: {error}")
    rows = average(scores)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "checkpoint": str(args.checkpoint),
        "sample_rate": codec.sample_rate,
        "bitrates": bitrates,
        "opus_bitrates": opus_bitrates,
        "window_seconds": args.window_seconds,
        "average": rows,
        "per_clip": [asdict(s) for s in scores],
    }
    (args.out / "codec_eval.json").write_text(json.dumps(result, indent=2))
    (args.out / "codec_eval.md").write_text(markdown_table(rows))
    if args.figure:
        _, wav = next(read_clips(files[:1], codec.sample_rate, codec.channels, None))
        wav = wav[:, : round(args.figure * codec.sample_rate)]
        with torch.no_grad():
            decoded = codec.decode(codec.encode(wav.unsqueeze(0), codec.bandwidth_to_num_codebooks(max(bitrates))))
        save_reconstruction(args.out / "reconstruction.png", wav, decoded[0, :, : wav.shape[-1]], codec.sample_rate,
                            f"{files[0].name}: reference (top) and decoded at {max(bitrates):g} kbps (bottom)")
    print(markdown_table(rows), end="")


if __name__ == "__main__":
    main()
