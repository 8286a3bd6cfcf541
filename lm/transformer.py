"""The decoder: pre-norm blocks of causal self-attention, cross-attention to the condition memory and a GELU MLP,
with sinusoidal positions added at the input (MusicGen) or rotary positions inside self-attention.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lm.attention import CrossAttention, CrossMemory, SelfAttention
from lm.kv_cache import KVCache

POSITIONAL = ("sin", "rope")


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """positions [N] -> [N, D]: cosines then sines of geometrically spaced frequencies (Vaswani et al. 2017)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device) / (half - 1))
    phase = positions[:, None].float() * frequencies[None, :]  # [N, D / 2]
    return torch.cat([phase.cos(), phase.sin()], dim=-1)


def rotary_tables(positions: torch.Tensor, head_dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [N] -> cos, sin [N, D / H], each frequency repeated for both halves (see `attention.rotate`)."""
    frequencies = max_period ** (-torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    phase = positions[:, None].float() * frequencies[None, :]  # [N, D / H / 2]
    phase = torch.cat([phase, phase], dim=-1)
    return phase.cos(), phase.sin()


@dataclass
class Positions:
    """The position encodings of consecutive positions: sinusoidal [N, D] added at the input, or rotary (cos, sin)
    [N, D / H] applied in self-attention; the other one is None. Decoding computes them once per generation and
    slices one step's rows."""

    additive: torch.Tensor | None
    rotary: tuple[torch.Tensor, torch.Tensor] | None

    def __getitem__(self, rows: slice) -> "Positions":
        return Positions(additive=None if self.additive is None else self.additive[rows],
                         rotary=None if self.rotary is None else (self.rotary[0][rows], self.rotary[1][rows]))


class TransformerBlock(nn.Module):
    """x + self_attn(norm(x)), then x + cross_attn(norm(x), memory), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, cross_attention: bool):
        super().__init__()
        self.self_attention_norm = nn.LayerNorm(dim)
        self.self_attention = SelfAttention(dim, num_heads)
        self.cross_attention_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attention = CrossAttention(dim, num_heads) if cross_attention else None
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ffn_dim, bias=False), nn.GELU(), nn.Linear(ffn_dim, dim, bias=False))

    def forward(self, x: torch.Tensor, memory: CrossMemory | None, cache: KVCache | None, past: int,
                rotary: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D]. Without a memory the cross-attention adds nothing (as a fully masked memory)."""
        x = x + self.self_attention(self.self_attention_norm(x), cache=cache, past=past, rotary=rotary)
        if memory is not None:
            x = x + self.cross_attention(self.cross_attention_norm(x), memory)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """activation_checkpointing: in training with gradients and without caches, keep only each block's input and
    recompute the block in the backward pass (Chen et al. 2016): activation memory drops from every block's saved
    tensors to the block inputs plus one block's, for about one more forward pass. Decoding never checkpoints."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, ffn_dim: int, cross_attention: bool,
                 positional: str, max_period: float, activation_checkpointing: bool = False):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        self.dim, self.num_heads = dim, num_heads
        self.positional, self.max_period = positional, max_period
        self.activation_checkpointing = activation_checkpointing
        self.layers = nn.ModuleList(
            [TransformerBlock(dim, num_heads, ffn_dim, cross_attention) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def has_cross_attention(self) -> bool:
        return self.layers[0].cross_attention is not None

    def project_memory(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> list[CrossMemory]:
        """memory [B, L, D], memory_mask [B, L] -> one projected memory per layer."""
        if not self.has_cross_attention:
            raise ValueError("conditions.cross was given but the model has cross_attention=False")
        return [layer.cross_attention.project(memory, memory_mask) for layer in self.layers]

    def make_caches(self, batch_size: int, capacity: int, dtype: torch.dtype, device: torch.device) -> list[KVCache]:
        """One cache per layer, each allocated by the layer's self-attention (the cache it attends with)."""
        return [layer.self_attention.make_cache(batch_size, capacity, dtype=dtype, device=device)
                for layer in self.layers]

    def positions(self, count: int, dtype: torch.dtype, device: torch.device) -> Positions:
        """The encodings of positions 0 .. count - 1."""
        positions = torch.arange(count, device=device)
        if self.positional == "sin":
            return Positions(additive=sinusoidal_embedding(positions, self.dim, self.max_period).to(dtype), rotary=None)
        cos, sin = rotary_tables(positions, self.dim // self.num_heads, self.max_period)
        return Positions(additive=None, rotary=(cos.to(dtype), sin.to(dtype)))

    def forward(self, x: torch.Tensor, positions: Positions | None = None, memories: list[CrossMemory] | None = None,
                caches: list[KVCache] | None = None, past: int = 0) -> torch.Tensor:
        """x [B, N, D] -> [B, N, D] (normalized). positions: the N positions' encodings; None = positions 0 .. N - 1.
        past: positions already in the caches, before the N new ones."""
        if positions is None:
            positions = self.positions(x.shape[1], x.dtype, x.device)
        if positions.additive is not None:
            x = x + positions.additive
        checkpointing = self.activation_checkpointing and self.training and caches is None and torch.is_grad_enabled()
        for index, layer in enumerate(self.layers):
            memory, cache = None if memories is None else memories[index], None if caches is None else caches[index]
            if checkpointing:
                x = checkpoint(layer, x, memory=memory, cache=cache, past=past, rotary=positions.rotary,
                               use_reentrant=False)
            else:
                x = layer(x, memory=memory, cache=cache, past=past, rotary=positions.rotary)
        return self.norm(x)
