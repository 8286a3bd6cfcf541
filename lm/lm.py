"""The codec-token language model: K summed token embeddings -> transformer -> K output heads.

The model computes logits; the generator (generator.py) owns the decode loop, sampling and guidance.
Two entry points: `forward` over a whole pattern sequence (training), and `start_decoding` + `decode` for
incremental decoding over a preallocated KV cache with the condition memory projected once.
"""
from dataclasses import dataclass

import torch
from torch import nn

from conditioners.tensors import ConditionTensors
from lm.attention import CrossMemory
from lm.kv_cache import KVCache
from lm.transformer import Positions, Transformer


@dataclass
class LMConfig:
    """Sizes of the LM; MusicGen small / medium / large are configs/lm/musicgen_*.yaml."""

    num_codebooks: int = 4  # K parallel token streams (the codec's codebooks)
    card: int = 2048  # codebook size; token `card` is the special token
    dim: int = 1024  # D
    num_heads: int = 16  # H
    num_layers: int = 24
    ffn_dim: int = 4096
    cross_attention: bool = True  # layers attend to conditions.cross
    # True: padded memory positions are masked out of cross-attention (HF MusicGen, ours). False: every memory
    # position takes softmax mass, padding included (AudioCraft, whose padded T5 states are zeros).
    cross_attention_mask: bool = True
    positional: str = "sin"  # "sin": sinusoidal added at the input (MusicGen); "rope": rotary in self-attention
    max_period: float = 10000.0  # longest wavelength of the positional frequencies
    # Recompute each block's activations in the backward pass instead of keeping them (training only; adds no
    # weights, so a checkpoint loads with it on or off).
    activation_checkpointing: bool = False


@dataclass
class DecodeState:
    """Everything one incremental decoding keeps between calls; create it with `LMModel.start_decoding`.

    caches:    one KVCache per layer, sized for the batch and the capacity (prepended steps included)
    positions: the position encodings of every cache position, computed once
    memories:  per layer cross-attention keys/values, or None without a cross condition
    add:       [B, S or 1, D] condition added to the input embeddings, or None
    prepended: cache positions the prepended condition fills, before the sequence steps
    steps:     sequence steps decoded so far (indexes `add` when it has one entry per step)
    """

    caches: list[KVCache]
    positions: Positions
    memories: list[CrossMemory] | None
    add: torch.Tensor | None
    prepended: int
    steps: int = 0

    @property
    def length(self) -> int:
        """Filled cache positions."""
        return self.prepended + self.steps


class LMModel(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = config
        K, card, D = config.num_codebooks, config.card, config.dim
        # One table of card + 1 rows (the special token last) per codebook, stored as one embedding with a row
        # offset per codebook so the K lookups are a single gather.
        self.embedding = nn.Embedding(K * (card + 1), D)
        self.register_buffer("offsets", torch.arange(K)[:, None] * (card + 1), persistent=False)  # [K, 1]
        self.transformer = Transformer(dim=D, num_heads=config.num_heads, num_layers=config.num_layers,
                                       ffn_dim=config.ffn_dim, cross_attention=config.cross_attention,
                                       positional=config.positional, max_period=config.max_period,
                                       activation_checkpointing=config.activation_checkpointing)
        # K heads of [card, D] as one matrix: one matmul per step instead of K.
        self.heads = nn.Linear(D, K * card, bias=False)

    @property
    def special_token(self) -> int:
        return self.config.card

    def embed(self, sequence: torch.Tensor) -> torch.Tensor:
        """sequence [B, K, N] tokens in [0, card] -> summed embeddings [B, N, D]."""
        return self.embedding(sequence + self.offsets).sum(dim=1)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [B, N, D] -> logits [B, K, N, card]."""
        B, N, _ = hidden.shape
        return self.heads(hidden).view(B, N, self.config.num_codebooks, self.config.card).transpose(1, 2)

    def _memories(self, conditions: ConditionTensors | None) -> list[CrossMemory] | None:
        if conditions is None or conditions.cross is None:
            return None
        mask = conditions.cross_mask
        if not self.config.cross_attention_mask:
            # AudioCraft attends to every position; a row with no real position (the null condition) is all zeros,
            # which gives the same zero output as a fully masked row.
            mask = torch.ones_like(mask)
        return self.transformer.project_memory(conditions.cross, mask)

    def forward(self, sequence: torch.Tensor, conditions: ConditionTensors | None = None) -> torch.Tensor:
        """sequence [B, K, S] -> logits [B, K, S, card]; the logits at step s predict step s + 1."""
        B, K, S = sequence.shape
        x = self.embed(sequence)  # [B, S, D]
        prepended = 0
        if conditions is not None and conditions.add is not None:
            x = x + conditions.add
        if conditions is not None and conditions.prepend is not None:
            prepended = conditions.prepend.shape[1]
            x = torch.cat([conditions.prepend, x], dim=1)  # [B, P + S, D]
        hidden = self.transformer(x, memories=self._memories(conditions))
        return self.project(hidden[:, prepended:])  # [B, K, S, card]

    def start_decoding(self, batch_size: int, capacity: int, conditions: ConditionTensors | None = None) -> DecodeState:
        """Allocate the caches for `capacity` sequence steps, project the memory and run the prepended steps."""
        parameter = self.embedding.weight
        prepend = None if conditions is None else conditions.prepend
        prepended = 0 if prepend is None else prepend.shape[1]
        state = DecodeState(
            caches=self.transformer.make_caches(batch_size, capacity + prepended, dtype=parameter.dtype,
                                                device=parameter.device),
            positions=self.transformer.positions(capacity + prepended, dtype=parameter.dtype, device=parameter.device),
            memories=self._memories(conditions),
            add=None if conditions is None else conditions.add,
            prepended=prepended,
        )
        if prepend is not None:
            self.transformer(prepend, positions=state.positions[:prepended], memories=state.memories,
                             caches=state.caches, past=0)
        return state

    def decode(self, sequence: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """sequence [B, K, N] (the next N steps) -> logits [B, K, N, card], appending the steps to the caches."""
        N = sequence.shape[2]
        past, capacity = state.length, state.caches[0].capacity
        if past + N > capacity:
            raise ValueError(f"KV cache capacity {capacity} exceeded: {past} filled + {N} new")
        add = state.add
        if add is not None and add.shape[1] > 1:
            add = add[:, state.steps:state.steps + N]
        logits = self.step(sequence, add, past, state.positions, state.memories, state.caches)
        state.steps += N
        return logits

    def step(self, sequence: torch.Tensor, add: torch.Tensor | None, past: int, positions: Positions,
             memories: list[CrossMemory] | None, caches: list[KVCache]) -> torch.Tensor:
        """The body of `decode` as a function of tensors and ints, which torch.compile can capture
        (lm/backends/compiled.py).
        sequence [B, K, N], add [B, N or 1, D] -> logits [B, K, N, card]; writes the caches at past .. past + N - 1."""
        x = self.embed(sequence)  # [B, N, D]
        if add is not None:
            x = x + add
        N = sequence.shape[2]
        hidden = self.transformer(x, positions=positions[past:past + N], memories=memories, caches=caches, past=past)
        return self.project(hidden)
