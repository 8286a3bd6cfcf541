"""Continuous batching: generations that join and leave a running batch between decode steps.

`LMGenerator` decodes a batch whose items start together and share every position. A server receives requests
while it decodes, so here each generation is a `Row` with its own pattern sequence and its own step: a row joins at
any step boundary (its first input is its step 0, at cache position 0), decodes one step per `RowBatch.step` beside
the others, and leaves when its last step is sampled or when it is removed. The KV cache is static
([2 * max_rows, H, capacity, D / H]: a conditional and a guidance row per generation, `RowKVCache`), and each row
reads only its own filled prefix.

A row's tokens are the ones `LMGenerator` gives the same generation alone (`GenerationPipeline.generate` with one
prompt): its sampling noise comes from its own generator, it has its own sampling parameters (`sample_rows`) and
guidance scale, it attends over exactly its own positions, and its sequence is built from the pattern of its own
number of frames, so past its own last frame its input holds the special token, as alone (with the delay pattern
a row's last frames are sampled after its first codebook has ended). Only the cross-attention memories of rows
with captions of different lengths are padded to a common length under a mask, as `LMGenerator` batches do.

Scope: one generation window (num_frames <= context_frames), conditions through cross-attention only (no prepended
or added condition such as a melody's chroma), no audio prompt: the rest goes through `LMGenerator`.
"""
import bisect
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from conditioners.tensors import ConditionTensors
from lm.attention import CrossMemory
from lm.generator import UNKNOWN
from lm.kv_cache import RowKVCache, RowPositions
from lm.lm import LMModel
from lm.patterns import Pattern, PatternProvider
from lm.sampling import Sampling, guide, sample_rows
from lm.transformer import Positions


@dataclass(eq=False)
class Row:
    """One generation in a `RowBatch`. `codes[:, :, :final]` are final; the row is done when `final == T`."""

    codes: Tensor  # [1, K, T]: UNKNOWN until final
    sequence: Tensor  # [1, K, S]: the pattern sequence of its own T frames
    pattern: Pattern
    final_after: list[int]  # [T]: the step after which each frame (and all before it) is final
    cross: Tensor | None  # [2, L, D]: its condition, then its guidance branch's (null or negative)
    cross_mask: Tensor | None  # [2, L]
    sampling: Sampling
    cfg_coef: float
    generator: torch.Generator
    slot: int  # its cache rows: 2 slot (conditional) and 2 slot + 1 (guidance branch)
    fed: int = 0  # sequence steps decoded so far: the next input is sequence[:, :, fed]
    final: int = 0

    @property
    def done(self) -> bool:
        return self.fed == self.sequence.shape[-1] - 1


class RowBatch:
    """Up to `max_rows` generations decoded together, each at its own step."""

    def __init__(self, model: LMModel, pattern: PatternProvider, max_rows: int):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.model, self.pattern, self.max_rows = model, pattern, max_rows
        self.rows: list[Row] = []
        self._caches: list[RowKVCache] = []
        self._positions: Positions | None = None  # the encodings of positions 0 .. capacity - 1
        self._memories = None  # the cross-attention memories of `rows`, rebuilt when they change
        self._memories_stale = True

    @property
    def device(self) -> torch.device:
        return self.model.embedding.weight.device

    @property
    def capacity(self) -> int:
        return self._caches[0].capacity if self._caches else 0

    @torch.inference_mode()
    def add(self, num_frames: int, conditions: ConditionTensors, negative: ConditionTensors | None,
            sampling: Sampling, cfg_coef: float, generator: torch.Generator) -> Row:
        """Start a generation of num_frames frames; its first step is decoded by the next `step`.
        conditions, negative: one item each (`LMGenerator.stream`'s, with a batch of 1); only cross is supported."""
        if len(self.rows) == self.max_rows:
            raise ValueError(f"the batch is full: max_rows={self.max_rows}")
        if conditions.prepend is not None or conditions.add is not None:
            raise ValueError("RowBatch conditions through cross-attention only; prepended or added conditions "
                             "(a melody) go through LMGenerator")
        unconditional = conditions.null() if negative is None else negative
        pattern = self.pattern.get_pattern(num_frames, self.device)
        codes = torch.full((1, self.model.config.num_codebooks, num_frames), UNKNOWN, dtype=torch.long,
                           device=self.device)
        both = conditions.cat(unconditional)
        free = sorted(set(range(self.max_rows)) - {row.slot for row in self.rows})
        row = Row(codes=codes, sequence=pattern.build(codes, special_token=self.model.special_token), pattern=pattern,
                  final_after=list(itertools.accumulate(pattern.step_index.amax(dim=0).tolist(), max)),
                  cross=both.cross, cross_mask=both.cross_mask, sampling=sampling, cfg_coef=cfg_coef,
                  generator=generator, slot=free[0])
        self._ensure_capacity(pattern.num_steps)
        self.rows.append(row)
        self._memories_stale = True
        return row

    def remove(self, row: Row) -> None:
        """Drop a row (done or cancelled); its cache rows are reused by the next row to join."""
        self.rows.remove(row)
        self._memories_stale = True

    @torch.inference_mode()
    def step(self) -> None:
        """Decode one step of every row, updating its codes and final; the rows stay (`remove` the done ones)."""
        rows, n = self.rows, len(self.rows)
        if n == 0:
            return
        # Batch row 2i is row i's conditional branch and 2i + 1 its guidance branch, in cache rows 2 slot, 2 slot + 1:
        # the two attend together from one slice of the cache.
        inputs = torch.cat([row.sequence[:, :, row.fed:row.fed + 1] for row in rows]).repeat_interleave(2, dim=0)
        positions = RowPositions.of([2 * row.slot + branch for row in rows for branch in (0, 1)],
                                    [row.fed for row in rows for _ in (0, 1)], self.device)
        for cache in self._caches:
            cache.rows = positions
        logits = self._logits(inputs, positions.lengths)  # [2n, K, card]
        cond, uncond = logits[0::2], logits[1::2]
        coef = torch.tensor([row.cfg_coef for row in rows], device=self.device).view(n, 1, 1)
        # cfg_coef 1 is the conditional logits themselves, as LMGenerator skips the guidance branch then.
        guided = torch.where(coef == 1, cond, guide(cond, uncond, coef))  # [n, K, card]
        tokens = sample_rows(guided, [row.sampling for row in rows], [row.generator for row in rows])  # [n, K]
        for row, row_tokens in zip(rows, tokens):
            row.fed += 1
            current = row.sequence[0, :, row.fed]
            row.sequence[0, :, row.fed] = torch.where(current == UNKNOWN, row_tokens, current)
            now_final = bisect.bisect_right(row.final_after, row.fed)
            if now_final > row.final:  # the new final frames' codes, from the steps that hold them (Pattern.revert)
                steps = row.pattern.step_index[:, row.final:now_final]  # [K, n]
                row.codes[0, :, row.final:now_final] = row.sequence[0].gather(1, steps)
                row.final = now_final

    def _logits(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """inputs [R, K, 1] at positions lengths [R] -> logits [R, K, card] (LMModel.step, one position per row)."""
        table = self._positions
        positions = Positions(
            additive=None if table.additive is None else table.additive[lengths][:, None],  # [R, 1, D]
            rotary=None if table.rotary is None else tuple(part[lengths][:, None, None] for part in table.rotary))
        hidden = self.model.transformer(self.model.embed(inputs), positions=positions, memories=self._cross_memories(),
                                        caches=self._caches)  # [R, 1, D]
        return self.model.project(hidden)[:, :, -1]

    def _cross_memories(self) -> list[CrossMemory] | None:
        """The projected memories of each row's two branches, in batch order, padded to the longest."""
        if self._memories_stale:
            self._memories_stale = False
            self._memories = None
            if self.rows[0].cross is not None:
                length = max(row.cross.shape[1] for row in self.rows)
                cross = torch.cat([F.pad(row.cross, (0, 0, 0, length - row.cross.shape[1]))
                                   for row in self.rows])  # [2n, L, D]
                mask = torch.cat([F.pad(row.cross_mask, (0, length - row.cross_mask.shape[1]))
                                  for row in self.rows])  # [2n, L]
                if not self.model.config.cross_attention_mask:
                    mask = torch.ones_like(mask)  # as LMModel: every position attended, padding included
                self._memories = self.model.transformer.project_memory(cross, mask)
        return self._memories

    def _ensure_capacity(self, steps: int) -> None:
        """Grow the caches (keeping what they hold) to hold `steps` positions per row."""
        if steps <= self.capacity:
            return
        parameter, config = self.model.embedding.weight, self.model.config
        old = self._caches
        self._caches = [RowKVCache.allocate(2 * self.max_rows, config.num_heads, config.dim // config.num_heads, steps,
                                            dtype=parameter.dtype, device=parameter.device)
                        for _ in range(config.num_layers)]
        for new, previous in zip(self._caches, old):
            new.keys[:, :, :previous.capacity] = previous.keys
            new.values[:, :, :previous.capacity] = previous.values
        self._positions = self.model.transformer.positions(steps, dtype=parameter.dtype, device=parameter.device)
