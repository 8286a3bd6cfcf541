"""Reading reference weight files and renaming their keys strictly.

Every converter in interop/ goes through these three steps:

    read_weights(directory)            -> lazy {name: tensor} (safetensors memory-mapped, sharded or single; .bin)
    rename(weights, rules, source)     -> {our name: tensor}, or ConversionError listing every unmapped key
    check_state(state, module, source) -> ConversionError naming missing keys and shape mismatches

so a conversion either accounts for every source tensor or fails naming what it could not place.
"""
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"


class ConversionError(ValueError):
    """A source that cannot be converted: the message names the file, key or option and what was expected."""


class LazyWeights(Mapping[str, Tensor]):
    """{name: tensor} over one or more safetensors files; a tensor is read from its memory-mapped file on access,
    so a converter holds only the tensors it is working on."""

    def __init__(self, files: dict[str, Path]):
        self.files = files  # tensor name -> file holding it

    def __getitem__(self, name: str) -> Tensor:
        with safe_open(self.files[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


class RenamedView(Mapping[str, Tensor]):
    """A lazy {new name: tensor} over another mapping, given {new name: old name}."""

    def __init__(self, weights: Mapping[str, Tensor], names: dict[str, str]):
        self.weights, self.names = weights, names

    def __getitem__(self, name: str) -> Tensor:
        return self.weights[self.names[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _safetensors_names(path: Path) -> list[str]:
    try:
        with safe_open(path, framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise ConversionError(f"{path}: not a readable safetensors file ({error})") from error


def read_weights(directory: Path) -> Mapping[str, Tensor]:
    """The weights of an HF model directory: model.safetensors, a sharded index, or pytorch_model.bin."""
    if (directory / SAFETENSORS_INDEX).is_file():
        index_file = directory / SAFETENSORS_INDEX
        try:
            weight_map = json.loads(index_file.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ConversionError(f"{index_file}: expected a JSON object with a 'weight_map'") from error
        files = {}
        for shard in sorted(set(weight_map.values())):
            for name in _safetensors_names(directory / shard):
                files[name] = directory / shard
        missing = sorted(set(weight_map) - set(files))
        if missing:
            raise ConversionError(f"{index_file} lists tensors its shards do not hold: {missing[:10]}")
        return LazyWeights(files)
    if (directory / SAFETENSORS_FILE).is_file():
        path = directory / SAFETENSORS_FILE
        return LazyWeights({name: path for name in _safetensors_names(path)})
    if (directory / TORCH_FILE).is_file():
        return load_torch_file(directory / TORCH_FILE)
    raise ConversionError(f"{directory}: no weights found (expected {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or "
                          f"{TORCH_FILE})")


def load_torch_file(path: Path) -> dict:
    """A torch.save file, memory-mapped when it is in the zip format, never executing pickled code."""
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except Exception as error:  # noqa: BLE001 - a corrupt or truncated file raises many kinds
        raise ConversionError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from error


Rule = tuple[str, str | Callable[[re.Match], str]]


def rename(weights: Mapping[str, Tensor], rules: list[Rule], source: str) -> dict[str, Tensor]:
    """Apply the first matching (regex, replacement) rule to each key; `re.fullmatch` semantics.

    A replacement of "" drops the key on purpose (a buffer the target recomputes). Keys matching no rule fail
    the conversion, all of them listed.
    """
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    renamed, unmapped = {}, []
    for name in weights:
        for pattern, replacement in compiled:
            match = pattern.fullmatch(name)
            if match:
                target = replacement(match) if callable(replacement) else match.expand(replacement)
                if target:
                    renamed[target] = weights[name]
                break
        else:
            unmapped.append(name)
    if unmapped:
        shown = ", ".join(unmapped[:20]) + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 20 else "")
        raise ConversionError(f"{source}: keys with no counterpart in codeclm: {shown}")
    return renamed


def check_state(state: Mapping[str, Tensor], module: nn.Module, source: str) -> None:
    """Refuse a converted state dict that does not fill `module` exactly (build `module` on the meta device)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{name} {tuple(state[name].shape)} != {tuple(expected[name].shape)}"
             for name in sorted(set(state) & set(expected)) if state[name].shape != expected[name].shape]
    problems = []
    if missing:
        problems.append(f"missing {missing[:10]}" + (f" ({len(missing)} in all)" if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected {unexpected[:10]}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:10])}")
    if problems:
        raise ConversionError(f"{source}: converted weights do not fit the model: {', '.join(problems)}")


class Piece(NamedTuple):
    """One reference tensor and where it goes: slice `index` of `count` equal slices (along dim 0) of `target`.

    Fused tensors are several pieces: HF's q_proj, k_proj, v_proj are slices 0, 1, 2 of 3 of our `qkv`.
    """

    source: str
    target: str
    index: int = 0
    count: int = 1


def join_pieces(weights: Mapping[str, Tensor], pieces: list[Piece], source: str) -> dict[str, Tensor]:
    """Reference weights -> our state dict, concatenating slices. Every key of `weights` must be a piece's source
    and every piece's source must be present; otherwise ConversionError naming the keys."""
    by_source = {piece.source: piece for piece in pieces}
    unmapped = sorted(set(weights) - set(by_source))
    if unmapped:
        shown = ", ".join(unmapped[:20]) + (f" ... ({len(unmapped)} in all)" if len(unmapped) > 20 else "")
        raise ConversionError(f"{source}: keys with no counterpart in codeclm: {shown}")
    missing = sorted(set(by_source) - set(weights))
    if missing:
        raise ConversionError(f"{source}: expected keys are missing: {missing[:20]}")
    slices: dict[str, list[Tensor | None]] = {}
    for piece in pieces:
        slices.setdefault(piece.target, [None] * piece.count)[piece.index] = weights[piece.source]
    return {target: parts[0] if len(parts) == 1 else torch.cat(parts) for target, parts in slices.items()}


def split_pieces(state: Mapping[str, Tensor], pieces: list[Piece], source: str) -> dict[str, Tensor]:
    """Our state dict -> reference weights: the inverse of `join_pieces`, as strict."""
    targets = {piece.target for piece in pieces}
    unmapped = sorted(set(state) - targets)
    if unmapped:
        raise ConversionError(f"{source}: keys the reference format has no place for: {unmapped[:20]}")
    missing = sorted(targets - set(state))
    if missing:
        raise ConversionError(f"{source}: expected keys are missing: {missing[:20]}")
    return {piece.source: state[piece.target].chunk(piece.count)[piece.index].clone() for piece in pieces}
