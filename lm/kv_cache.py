"""A preallocated key/value cache for one self-attention layer, and the attention of new steps over it.

The buffers are allocated once for a batch size and a capacity; each decode call writes its keys and values in
place after the filled prefix. Nothing is concatenated or reallocated per step, and attention reads only the filled
prefix, so the cost of a step grows only with the attention itself. The cache does not count what it holds: the
caller passes the filled length (`DecodeState.length`), a plain int, so a compiled decode step sees it as an
argument rather than as state it would have to guard on.

The cache attends (`attend`): a cache that stores its keys and values another way (fp16, int8: lm/backends/) is a
subclass that brings the attention reading them, and `SelfAttention` is the same whatever cache it is given.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class KVCache:
    """keys, values: [B, H, capacity, D / H], in the model's dtype."""

    keys: torch.Tensor
    values: torch.Tensor

    @classmethod
    def allocate(cls, batch_size: int, num_heads: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device) -> "KVCache":
        """dtype: the model's, in which keys and values are computed."""
        shape = (batch_size, num_heads, capacity, head_dim)
        return cls(keys=torch.zeros(shape, dtype=dtype, device=device),
                   values=torch.zeros(shape, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        """Write keys, values [B, H, N, D / H] at positions start .. start + N - 1. `LMModel.decode` refuses a step
        past the capacity before any layer runs."""
        end = start + keys.shape[2]
        self.keys[:, :, start:end].copy_(keys)
        self.values[:, :, start:end].copy_(values)

    def prefix(self, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of positions 0 .. end - 1, [B, H, end, D / H]."""
        return self.keys[:, :, :end], self.values[:, :, :end]

    def attend(self, queries: torch.Tensor, past: int) -> torch.Tensor:
        """queries [B, H, N, D / H] of the N positions after `past` cached ones, their keys and values written
        -> [B, H, N, D / H]: each query attends to every position up to its own."""
        N = queries.shape[2]
        keys, values = self.prefix(past + N)  # [B, H, past + N, D / H]
        if N == 1:
            return F.scaled_dot_product_attention(queries, keys, values)  # one new step sees the whole prefix
        if past == 0:
            return F.scaled_dot_product_attention(queries, keys, values, is_causal=True)
        visible = torch.ones(N, past + N, dtype=torch.bool, device=queries.device).tril(diagonal=past)
        return F.scaled_dot_product_attention(queries, keys, values, attn_mask=visible)


Rows = slice | Tensor  # rows of a batch or of a cache: a range (a view, no copy) or indices [n]


def _rows(indices: list[int], device: torch.device) -> Rows:
    if indices == list(range(indices[0], indices[-1] + 1)):
        return slice(indices[0], indices[-1] + 1)
    return torch.tensor(indices, device=device)


@dataclass(frozen=True)
class RowPositions:
    """Where the rows of a continuous batch decode their next step (lm/row_batch.py): row b of the step's batch
    is cache row slots[b] (given to `of`) and its new step takes position lengths[b] (its filled positions).

    groups: (length, batch rows, their cache rows) for each distinct length: the rows that attend together; rows
            that are consecutive both in the batch and in the cache are a slice, read without a copy.
    """

    lengths: Tensor  # [B] long
    groups: tuple[tuple[int, Rows, Rows], ...]

    @classmethod
    def of(cls, slots: list[int], lengths: list[int], device: torch.device) -> "RowPositions":
        groups = []
        for length in sorted(set(lengths)):
            rows = [index for index, other in enumerate(lengths) if other == length]
            groups.append((length, _rows(rows, device), _rows([slots[index] for index in rows], device)))
        return cls(lengths=torch.tensor(lengths, device=device), groups=tuple(groups))


@dataclass
class RowKVCache(KVCache):
    """A cache whose rows are at different positions: continuous batching, where generations join and leave
    between steps. Before each one-step decode the caller sets `rows` (the same `RowPositions` on every layer);
    `write` and `attend` then ignore their `start` / `past` and use each row's own length.

    Rows of equal length attend in one SDPA over exactly their filled prefix. One SDPA over the longest prefix with
    a mask would be cheaper, but its softmax sums over a different length than the row's solo decode does, which
    changes the last bits; grouped, each row's output is the one it gets decoding alone."""

    rows: RowPositions | None = None

    def write(self, keys: Tensor, values: Tensor, start: int) -> None:
        """keys, values [B, H, 1, D / H] of the step at each row's position."""
        if keys.shape[2] != 1 or self.rows is None:
            raise ValueError(f"a RowKVCache writes one step per call after `rows` is set, got {keys.shape[2]} steps")
        for length, rows, slots in self.rows.groups:
            self.keys[slots, :, length] = keys[rows, :, 0]  # [n, H, D / H]
            self.values[slots, :, length] = values[rows, :, 0]

    def attend(self, queries: Tensor, past: int) -> Tensor:
        """queries [B, H, 1, D / H] -> [B, H, 1, D / H]: each row attends to its positions 0 .. its length."""
        out = torch.empty_like(queries)
        for length, rows, slots in self.rows.groups:
            out[rows] = F.scaled_dot_product_attention(queries[rows], self.keys[slots, :, :length + 1],
                                                       self.values[slots, :, :length + 1])
        return out
