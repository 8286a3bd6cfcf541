"""Lookup-table conditioner for categorical attributes (genre, mood, key, instrument, ...).

Two ways to turn a value into table rows, chosen by the config:
- a fixed vocabulary: the whole (lower-cased) value is one entry; L = 1; a value outside it is masked;
- hashed words: the value is split into lower-cased words and each word is hashed (CRC32, stable across runs and
  processes, unlike Python's salted hash) into `hash_buckets` rows; L = the longest word count in the batch.
None or blank values are fully masked rows (the null condition).
"""
import zlib

import torch
from torch import nn

from conditioners.condition import Condition


class LookupConditioner(nn.Module):
    """list of B categorical strings -> Condition(embeddings [B, L, D], mask [B, L])."""

    def __init__(self, output_dim: int, vocabulary: list[str] | None, hash_buckets: int | None):
        super().__init__()
        if (vocabulary is None) == (hash_buckets is None):
            raise ValueError("give exactly one of vocabulary (fixed entries) or hash_buckets (hashed words)")
        if hash_buckets is not None and hash_buckets < 1:
            raise ValueError(f"hash_buckets must be >= 1, got {hash_buckets}")
        if vocabulary is not None:
            entries = [entry.strip().lower() for entry in vocabulary]
            if not entries or len(set(entries)) != len(entries):
                raise ValueError(f"vocabulary must be non-empty and unique after lower-casing, got {vocabulary}")
            self.index = {entry: row for row, entry in enumerate(entries)}
        self.hash_buckets = hash_buckets
        self.table = nn.Embedding(len(vocabulary) if vocabulary is not None else hash_buckets, output_dim)

    def rows(self, value: str | None) -> list[int]:
        """Table rows of one value; empty for None, blank or (fixed vocabulary) unknown values."""
        if value is None or not value.strip():
            return []
        if self.hash_buckets is not None:
            return [zlib.crc32(word.encode()) % self.hash_buckets for word in value.lower().split()]
        row = self.index.get(value.strip().lower())
        return [] if row is None else [row]

    def forward(self, values: list[str | None]) -> Condition:
        rows = [self.rows(value) for value in values]
        length = max([1] + [len(example) for example in rows])
        device = self.table.weight.device
        ids = torch.zeros(len(values), length, dtype=torch.long)
        mask = torch.zeros(len(values), length, dtype=torch.bool)
        for index, example in enumerate(rows):
            ids[index, : len(example)] = torch.tensor(example, dtype=torch.long)
            mask[index, : len(example)] = True
        ids, mask = ids.to(device), mask.to(device)
        embeddings = self.table(ids) * mask.unsqueeze(-1)  # [B, L, D]
        return Condition(embeddings=embeddings, mask=mask)
