"""On-disk layout of pre-extracted codec tokens, written by data.extract_tokens and read by the LM dataset.

    OUT/tokens.json         codec facts (sample_rate, frame_rate, num_codebooks, cardinality) and shard_size
    OUT/shard_00000.npy     codes of every item of the shard, concatenated in time: [K, sum of F] int16/int32
    OUT/shard_00000.jsonl   one line per item: path, start (first frame in the .npy), num_frames, metadata

A shard is complete when its .jsonl exists: the .npy is written first, both via a temporary file and
os.replace, so an interrupted run never leaves a shard that looks finished.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INFO_NAME = "tokens.json"


@dataclass(frozen=True)
class TokenItem:
    path: str
    codes: np.ndarray  # [K, F] (a view into the shard's memory map)
    metadata: dict

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]


def shard_stem(folder: Path, shard_index: int) -> Path:
    return folder / f"shard_{shard_index:05d}"


def is_shard_complete(folder: Path, shard_index: int) -> bool:
    return shard_stem(folder, shard_index).with_suffix(".jsonl").is_file()


def code_dtype(cardinality: int) -> np.dtype:
    return np.dtype(np.int16) if cardinality <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def _replace_atomically(path: Path, write) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        write(file)
    os.replace(temporary, path)


def write_shard(folder: Path, shard_index: int, items: list[tuple[str, np.ndarray, dict]], dtype: np.dtype) -> None:
    """items: (path, codes [K, F], metadata) per audio file. An empty list still marks the shard complete."""
    stem = shard_stem(folder, shard_index)
    num_codebooks = {codes.shape[0] for _, codes, _ in items}
    if len(num_codebooks) > 1:
        raise ValueError(f"all items of a shard must have the same number of codebooks, got {num_codebooks}")
    codes = (np.concatenate([item_codes for _, item_codes, _ in items], axis=1) if items
             else np.zeros((0, 0), dtype=dtype)).astype(dtype)
    _replace_atomically(stem.with_suffix(".npy"), lambda file: np.save(file, codes))
    lines, start = [], 0
    for path, item_codes, metadata in items:
        lines.append(json.dumps({"path": path, "start": start, "num_frames": item_codes.shape[1],
                                 "metadata": metadata}, sort_keys=True))
        start += item_codes.shape[1]
    _replace_atomically(stem.with_suffix(".jsonl"), lambda file: file.write("".join(l + "\n" for l in lines).encode()))


def read_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a data.extract_tokens output folder?")
    return json.loads(path.read_text())


def write_info(folder: Path, info: dict) -> None:
    _replace_atomically(folder / INFO_NAME, lambda file: file.write(json.dumps(info, sort_keys=True, indent=1).encode()))


def read_token_shards(folder: str | Path) -> list[TokenItem]:
    """Every item of every complete shard, in shard order; codes are memory-mapped, not loaded."""
    folder = Path(folder)
    read_info(folder)
    items = []
    for lines_path in sorted(folder.glob("shard_*.jsonl")):
        records = [json.loads(line) for line in lines_path.read_text(encoding="utf-8").splitlines()]
        if not records:
            continue
        shard_codes = np.load(lines_path.with_suffix(".npy"), mmap_mode="r")  # [K, sum of F]
        for record in records:
            codes = shard_codes[:, record["start"]:record["start"] + record["num_frames"]]
            items.append(TokenItem(path=record["path"], codes=codes, metadata=record["metadata"]))
    return items
