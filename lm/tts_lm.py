"""The decoder-only text-to-speech LM: one token embedding -> causal transformer -> one head over one vocabulary.

The vocabulary is `lm.tts_format.TTSFormat`'s (special tokens, text characters, audio codes offset per slot), so
one sequence `[SOH] text [EOT] [EOH] [SOS] audio [EOS]` is read and predicted by the same embedding and head
(VyvoTTS / Orpheus). The transformer is the music LM's (lm/transformer.py) without cross-attention: the text is
the prefix of the sequence, not a condition memory.

Padding needs no attention mask: batches are right-padded (`TTSFormat.collate`) and attention is causal, so a real
token never attends to a pad that follows it; the logits at pad positions are not read (the loss mask is False
there). The model computes logits; lm/tts_generator.py owns the decode loop and sampling.
"""
from dataclasses import dataclass

import torch
from torch import nn

from lm.lm import DecodeState
from lm.transformer import Transformer


def check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """Refuse token ids that are not a [B, L] long tensor in [0, vocab_size), naming what they are."""
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise ValueError(f"ids must be a 2-D long tensor [B, L], got {ids.dtype} {list(ids.shape)}")
    if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, vocab_size={vocab_size}), got [{int(ids.min())}, {int(ids.max())}]")


@dataclass
class TTSLMConfig:
    """Sizes of the TTS LM (configs/tts/*.yaml `model:`); the vocabulary size comes from the TTSFormat."""

    dim: int = 512  # D
    num_heads: int = 8  # H
    num_layers: int = 12
    ffn_dim: int = 2048
    positional: str = "rope"  # "rope": rotary in self-attention (Llama, Orpheus's base); "sin": added at the input
    max_period: float = 10000.0  # longest wavelength of the positional frequencies
    # Recompute each block's activations in the backward pass instead of keeping them (training only).
    activation_checkpointing: bool = False


class TTSLM(nn.Module):
    def __init__(self, config: TTSLMConfig, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.config, self.vocab_size = config, vocab_size
        self.embedding = nn.Embedding(vocab_size, config.dim)
        self.transformer = Transformer(dim=config.dim, num_heads=config.num_heads, num_layers=config.num_layers,
                                       ffn_dim=config.ffn_dim, cross_attention=False, positional=config.positional,
                                       max_period=config.max_period,
                                       activation_checkpointing=config.activation_checkpointing)
        self.head = nn.Linear(config.dim, vocab_size, bias=False)

    def freeze(self, layers: int, embeddings: bool) -> None:
        """Stop training the first `layers` transformer blocks and, with `embeddings`, the token embedding."""
        if layers > self.config.num_layers:
            raise ValueError(f"freeze_layers={layers} but the model has {self.config.num_layers} layers")
        self.transformer.layers[:layers].requires_grad_(False)
        if embeddings:
            self.embedding.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, L] (right-padded) -> logits [B, L, V]; the logits at position i predict ids[i + 1]."""
        check_ids(ids, self.vocab_size)
        hidden = self.transformer(self.embedding(ids))  # [B, L, D]
        return self.head(hidden)  # [B, L, V]

    def start_decoding(self, batch_size: int, capacity: int) -> DecodeState:
        """Allocate the KV caches and position encodings for `capacity` positions (prompt and generated)."""
        parameter = self.embedding.weight
        return DecodeState(
            caches=self.transformer.make_caches(batch_size, capacity, dtype=parameter.dtype, device=parameter.device),
            positions=self.transformer.positions(capacity, dtype=parameter.dtype, device=parameter.device),
            memories=None, add=None, prepended=0)

    def decode(self, ids: torch.Tensor, state: DecodeState) -> torch.Tensor:
        """ids [B, N] (the next N positions) -> logits [B, N, V], appending the positions to the caches."""
        check_ids(ids, self.vocab_size)
        N = ids.shape[1]
        past, capacity = state.length, state.caches[0].capacity
        if past + N > capacity:
            raise ValueError(f"KV cache capacity {capacity} exceeded: {past} filled + {N} new")
        hidden = self.transformer(self.embedding(ids), positions=state.positions[past:past + N],
                                  caches=state.caches, past=past)  # [B, N, D]
        state.steps += N
        return self.head(hidden)  # [B, N, V]
