"""Encode a manifest with a trained codec into code shards for LM training (layout: data/token_shards.py).

    python -m data.extract_tokens --codec DIR --manifest M --out DIR [--shard-size N] [--device cpu|cuda]

Resumable: finished shards are kept and skipped, so rerunning the same command after an interruption only
encodes what is missing. Files that cannot be read are skipped with a logged reason.

A multi-scale codec (SNAC, codec/snac.py) writes the same [K, T] layout: its K levels of different lengths become
the F slots of each coarse frame (`MultiRateFrames`), and tokens.json records how to get the levels back.
"""
import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm import tqdm

from data.audio import AudioReadError, convert_audio, read_audio
from data.manifest import AudioEntry, read_manifest, read_sidecar
from data.token_shards import code_dtype, is_shard_complete, read_info, write_info, write_shard
from lm.multirate import MultiRatePattern

if TYPE_CHECKING:
    from codec.snac import SNACCodec

logger = logging.getLogger(__name__)


class AudioEncoder(Protocol):
    """What extraction needs from a codec (codec.codec.Codec provides it)."""
    sample_rate: int
    channels: int
    frame_rate: float
    num_codebooks: int
    cardinality: int

    def encode(self, wav: torch.Tensor) -> torch.Tensor:  # [B, C, T] -> [B, K, F] long
        ...


MULTIRATE_ORDER = "depth_first"  # slot order inside a coarse frame: Orpheus / VyvoTTS (lm/multirate.py)


class MultiRateFrames:
    """A multi-scale codec (codec.snac.SNACCodec: K levels of codes [B, T_q], T_q = T_c * strides[0] / strides[q])
    as an AudioEncoder: `encode` gives the F slots of each coarse frame, [B, F, T_c] (lm/multirate.py
    `to_frames`; F = 7 for strides [4, 2, 1]), so `num_codebooks` is F and `frame_rate` the coarse rate. The
    levels come back with `MultiRatePattern(**tokens_info["multirate"]).from_frames(codes)`."""

    def __init__(self, codec: "SNACCodec", order: str = MULTIRATE_ORDER):
        self.codec = codec
        self.pattern = MultiRatePattern(codec.strides, order)
        self.sample_rate, self.channels, self.cardinality = codec.sample_rate, codec.channels, codec.cardinality
        self.frame_rate = codec.frame_rate / codec.strides[0]
        self.num_codebooks = self.pattern.frame_size

    @property
    def multirate(self) -> dict:
        """What tokens.json records under `multirate`: MultiRatePattern's arguments."""
        return {"strides": list(self.pattern.strides), "order": self.pattern.order}

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        return self.pattern.to_frames(self.codec.encode(wav))  # [B, C, T] -> [B, F, T_c]


@dataclass
class ExtractionSummary:
    shards_written: int
    shards_skipped: int  # already complete from an earlier run
    files_encoded: int
    files_failed: int


@torch.no_grad()
def encode_file(codec: AudioEncoder, path: str, device: torch.device) -> np.ndarray:
    """Codes [K, F] of one whole file, at the codec's rate and channel count."""
    wav, sample_rate = read_audio(path)
    wav = convert_audio(wav, sample_rate, codec.sample_rate, codec.channels)  # [C, T]
    codes = codec.encode(wav[None].to(device))  # [1, K, F]
    return codes[0].cpu().numpy()


def codec_facts(codec: AudioEncoder) -> dict:
    facts = {"sample_rate": codec.sample_rate, "channels": codec.channels, "frame_rate": codec.frame_rate,
             "num_codebooks": codec.num_codebooks, "cardinality": codec.cardinality}
    if isinstance(codec, MultiRateFrames):
        facts["multirate"] = codec.multirate
    return facts


def extract_tokens(codec: AudioEncoder, entries: list[AudioEntry], out: str | Path, shard_size: int,
                   device: str = "cpu", progress: bool = True) -> ExtractionSummary:
    """Shard i holds entries [i * shard_size, (i + 1) * shard_size) of the manifest, minus unreadable files."""
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {**codec_facts(codec), "shard_size": shard_size, "num_entries": len(entries)}
    if (out / "tokens.json").is_file():
        previous = read_info(out)
        if previous != info:
            raise ValueError(f"{out} holds shards from another run ({previous}); this run is {info}: "
                             "use a fresh --out folder")
    else:
        write_info(out, info)
    dtype = code_dtype(codec.cardinality)
    torch_device = torch.device(device)
    num_shards = math.ceil(len(entries) / shard_size)
    summary = ExtractionSummary(shards_written=0, shards_skipped=0, files_encoded=0, files_failed=0)
    bar = tqdm(total=len(entries), desc="extract", unit="file", disable=not progress)
    for shard_index in range(num_shards):
        shard_entries = entries[shard_index * shard_size:(shard_index + 1) * shard_size]
        if is_shard_complete(out, shard_index):
            summary.shards_skipped += 1
            bar.update(len(shard_entries))
            continue
        items = []
        for entry in shard_entries:
            try:
                codes = encode_file(codec, entry.path, torch_device)
            except (AudioReadError, ValueError) as error:  # unreadable, or refused by the codec (e.g. too short)
                logger.warning("skipping %s: %s", entry.path, error)
                summary.files_failed += 1
            else:
                items.append((entry.path, codes, read_sidecar(entry.path)))
                summary.files_encoded += 1
            bar.update(1)
        write_shard(out, shard_index, items, dtype=dtype)
        summary.shards_written += 1
    bar.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", type=Path, required=True, help="folder written by Codec.save or SNACCodec.save")
    parser.add_argument("--manifest", type=Path, required=True, help="manifest file or split folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder for shards")
    parser.add_argument("--shard-size", type=int, default=256, help="audio files per shard")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from codec.loading import load_codec  # imported here so the library functions above need no codec package
    from codec.snac import SNACCodec

    try:
        codec = load_codec(args.codec, device=args.device)
        if isinstance(codec, SNACCodec):
            codec = MultiRateFrames(codec)
        summary = extract_tokens(codec, read_manifest(args.manifest), args.out, shard_size=args.shard_size,
                                 device=args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    logger.info("%s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
