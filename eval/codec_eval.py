"""Objective codec evaluation per bitrate, against Opus at the same bitrates (DAC paper Table 3 format).

    python -m eval.codec_eval --checkpoint CODEC_DIR --audio DIR_OR_MANIFEST --out OUT_DIR

CODEC_DIR is a directory written by `Codec.save`. The audio is a folder (searched recursively for .wav/.flac)
or a JSONL manifest with one {"path": ...} per line (relative paths resolve against the manifest's folder).
Each file is converted to the codec's rate and channel count, then, for every bitrate, coded by the codec with
the matching number of codebooks and by Opus at the same bitrates (ffmpeg + libopus, which stops at 6 kbps: a
lower-rate codec is put next to Opus's lowest rates with --opus-bitrates 6 8), and scored with SI-SDR, mel
distance, multi-resolution STFT distance and ViSQOL (see eval/audio_metrics.py).
Writes OUT_DIR/codec_eval.json (per file and averaged) and OUT_DIR/codec_eval.md (the averaged table).
"""
import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from codec.codec import Codec
from data.audio import convert_audio, read_audio
from eval.audio_metrics import mel_distance, si_sdr, stft_distance, visqol
from eval.opus import MIN_BITRATE_KBPS, opus_round_trip

AUDIO_SUFFIXES = (".wav", ".flac")
METRICS = ("si_sdr", "mel_distance", "stft_distance", "visqol")


@dataclass
class Score:
    file: str
    system: str            # "codec" or "opus"
    kbps: float
    si_sdr: float          # dB, higher is better
    mel_distance: float    # lower is better
    stft_distance: float   # lower is better
    visqol: float | None   # MOS-LQO 1..5, higher is better; None when skipped


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


def score(file: str, system: str, kbps: float, estimate: Tensor, reference: Tensor, sample_rate: int,
          with_visqol: bool) -> Score:
    """estimate, reference: [C, T]."""
    return Score(
        file=file,
        system=system,
        kbps=kbps,
        si_sdr=si_sdr(estimate, reference).mean().item(),
        mel_distance=mel_distance(estimate, reference, sample_rate).item(),
        stft_distance=stft_distance(estimate, reference).item(),
        visqol=visqol(estimate, reference, sample_rate) if with_visqol else None,
    )


@torch.no_grad()
def evaluate(codec: Codec, files: list[Path], bitrates: list[float], opus_bitrates: list[float],
             with_visqol: bool) -> list[Score]:
    """Scores of the codec at each of `bitrates` and of Opus at each of `opus_bitrates`, per file."""
    scores = []
    for path in files:
        wav, sample_rate = read_audio(path)
        wav = convert_audio(wav, sample_rate, codec.sample_rate, codec.channels)  # [C, T]
        T = wav.shape[-1]
        for kbps in bitrates:
            codes = codec.encode(wav.unsqueeze(0), codec.bandwidth_to_num_codebooks(kbps))  # [1, K', F]
            decoded = codec.decode(codes)[0, :, :T]
            scores.append(score(str(path), "codec", kbps, decoded, wav, codec.sample_rate, with_visqol))
        for kbps in opus_bitrates:
            opus = opus_round_trip(wav, codec.sample_rate, kbps)
            scores.append(score(str(path), "opus", kbps, opus, wav, codec.sample_rate, with_visqol))
    return scores


def average(scores: list[Score]) -> list[dict]:
    """One row per (system, kbps): each metric averaged over files."""
    rows = []
    for system, kbps in sorted({(s.system, s.kbps) for s in scores}):
        group = [s for s in scores if s.system == system and s.kbps == kbps]
        row = {"system": system, "kbps": kbps, "files": len(group)}
        for metric in METRICS:
            values = [getattr(s, metric) for s in group]
            row[metric] = None if None in values else sum(values) / len(values)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    header = "| system | kbps | files | SI-SDR dB (higher) | mel dist (lower) | STFT dist (lower) | ViSQOL (higher) |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = ["n/a" if row[m] is None else f"{row[m]:.2f}" for m in METRICS]
        lines.append(f"| {row['system']} | {row['kbps']:g} | {row['files']} | " + " | ".join(cells) + " |")
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
        scores = evaluate(codec, files, bitrates, opus_bitrates, with_visqol=not args.no_visqol)
    except (OSError, ValueError, RuntimeError) as error:
        sys.exit(f"codec_eval: {error}")
    rows = average(scores)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "checkpoint": str(args.checkpoint),
        "sample_rate": codec.sample_rate,
        "bitrates": bitrates,
        "opus_bitrates": opus_bitrates,
        "average": rows,
        "per_file": [asdict(s) for s in scores],
    }
    (args.out / "codec_eval.json").write_text(json.dumps(result, indent=2))
    (args.out / "codec_eval.md").write_text(markdown_table(rows))
    print(markdown_table(rows), end="")


if __name__ == "__main__":
    main()
