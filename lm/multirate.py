"""Multi-rate codes (SNAC: one length per codebook) <-> one token stream, in Orpheus order, and back.

A multi-scale codec gives K levels of codes [B, T_q]; level q ticks `counts[q] = strides[0] // strides[q]` times
per coarse frame, so T_q = T_c * counts[q]. One coarse frame holds F = sum(counts) codes, the frame's *slots*.
Strides [4, 2, 1] (SNAC 24 kHz) give counts 1, 2, 4 and F = 7: a coarse code c, two middle codes m, four fine f.

Two slot orders inside a frame:

    depth_first  (Orpheus, VyvoTTS)   [c0, m0, f0, f1, m1, f2, f3]   each code followed by the finer codes it covers
    level_major                       [c0, m0, m1, f0, f1, f2, f3]   all codes of a level, then the next level

The stream is the frames one after another: stream[t * F + s] is slot s of coarse frame t. Equal strides
([1, 1, 1, 1]) make F = K slots per frame and the stream is plain flattening (AudioCraft's unrolled pattern).

The MusicGen-style LM reads the same layout through `to_frames`: slots become F codebooks at the coarse rate,
frames [B, F, T_c], and `lm.patterns.UnrolledPattern(F)` over them steps through exactly this stream (with the
special step 0 in front), so each position is seen through its slot's own embedding table and head. A model
with one shared vocabulary instead offsets each token by its slot (or level) times card: `slot_index` and
`level_index` give that index per stream position.

Partial streams (generation so far) follow lm/patterns: `unflatten` returns the codes with the special token
where a code has not been generated yet and a valid mask per level; a codec decodes only `complete_frames`.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

ORDERS = ("depth_first", "level_major")


def _frame_slots(counts: list[int], order: str) -> list[tuple[int, int]]:
    """(level q, index j of the code within the coarse frame) for each of the F slots, in stream order."""
    if order == "level_major":
        return [(q, j) for q, count in enumerate(counts) for j in range(count)]
    slots: list[tuple[int, int]] = []

    def visit(q: int, j: int) -> None:  # pre-order walk: code (q, j), then the codes of level q + 1 it covers
        slots.append((q, j))
        if q + 1 < len(counts):
            children = counts[q + 1] // counts[q]
            for child in range(j * children, (j + 1) * children):
                visit(q + 1, child)

    for j in range(counts[0]):
        visit(0, j)
    return slots


@dataclass(frozen=True)
class MultiRateCodes:
    """Codes read back from a (possibly partial) stream.

    codes:            K tensors [B, T_q]; codes not in the stream hold the special token
    valid:            K tensors [T_q] bool, True where the code was in the stream
    complete_frames:  coarse frames whose F slots are all in the stream (what a codec can decode)
    """

    codes: list[Tensor]
    valid: list[Tensor]
    complete_frames: int


class MultiRatePattern:
    """Maps K levels of codes with strides `strides` (coarse first, each dividing the one before) to F slots per
    coarse frame in `order` (see the module docstring), and back."""

    def __init__(self, strides: list[int] | tuple[int, ...], order: str = "depth_first"):
        strides = [int(stride) for stride in strides]
        if not strides or min(strides) < 1:
            raise ValueError(f"strides must be a non-empty list of integers >= 1, got {strides}")
        if any(coarse % fine for coarse, fine in zip(strides, strides[1:])):
            raise ValueError(f"strides must be coarse first, each a multiple of the next, got {strides}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        self.strides = strides
        self.order = order
        self.counts = [strides[0] // stride for stride in strides]  # codes per coarse frame, per level
        self.slots = _frame_slots(self.counts, order)
        level_starts = [sum(self.counts[:q]) for q in range(len(self.counts))]
        # slot s reads entry slot_source[s] of a frame's codes concatenated level after level
        self.slot_source = torch.tensor([level_starts[q] + j for q, j in self.slots])  # [F]
        self.slot_level = torch.tensor([q for q, _ in self.slots])  # [F]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def frame_size(self) -> int:
        """F: slots (tokens) per coarse frame."""
        return len(self.slots)

    def num_frames(self, codes: list[Tensor]) -> int:
        """T_c of K code tensors [..., T_q], checking every level has T_c * counts[q] codes."""
        if len(codes) != self.num_levels:
            raise ValueError(f"codes must hold {self.num_levels} levels (strides {self.strides}), got {len(codes)}")
        frames = codes[0].shape[-1]
        lengths = [level.shape[-1] for level in codes]
        if lengths != [frames * count for count in self.counts]:
            raise ValueError(f"codes lengths must be T_c * {self.counts} for strides {self.strides}, got {lengths}")
        return frames

    def to_frames(self, codes: list[Tensor]) -> Tensor:
        """K codes [..., T_q] -> frames [..., F, T_c]: slot s of coarse frame t at [..., s, t]."""
        frames = self.num_frames(codes)
        per_frame = [level.unflatten(-1, (frames, count)) for level, count in zip(codes, self.counts)]
        level_major = torch.cat(per_frame, dim=-1)  # [..., T_c, F], levels one after another
        return level_major.index_select(-1, self.slot_source.to(level_major.device)).transpose(-1, -2)

    def from_frames(self, frames: Tensor) -> list[Tensor]:
        """frames [..., F, T_c] -> K codes [..., T_q]; works for any dtype (codes, or a bool valid mask)."""
        if frames.shape[-2] != self.frame_size:
            raise ValueError(f"frames must have F={self.frame_size} slots in dim -2, got shape {list(frames.shape)}")
        level_major = torch.empty_like(frames.transpose(-1, -2))  # [..., T_c, F]
        level_major[..., self.slot_source.to(frames.device)] = frames.transpose(-1, -2)
        return [level.flatten(-2) for level in level_major.split(self.counts, dim=-1)]

    def flatten(self, codes: list[Tensor]) -> Tensor:
        """K codes [B, T_q] -> stream [B, T_c * F]."""
        return self.to_frames(codes).transpose(-1, -2).flatten(-2)

    def unflatten(self, stream: Tensor, special_token: int, num_frames: int | None = None) -> MultiRateCodes:
        """stream [B, N] -> codes of `num_frames` coarse frames (default: the frames the stream reaches into).

        Codes beyond the N given tokens hold `special_token` and are invalid; N may not exceed num_frames * F.
        """
        B, N = stream.shape
        frames = -(-N // self.frame_size) if num_frames is None else num_frames
        if N > frames * self.frame_size:
            raise ValueError(f"stream of {N} tokens exceeds num_frames={frames} * {self.frame_size} slots")
        padding = frames * self.frame_size - N
        padded = torch.nn.functional.pad(stream, (0, padding), value=special_token)  # [B, T_c * F]
        present = torch.arange(frames * self.frame_size, device=stream.device) < N  # [T_c * F]
        codes = self.from_frames(padded.unflatten(-1, (frames, self.frame_size)).transpose(-1, -2))
        valid = self.from_frames(present.view(frames, self.frame_size).transpose(0, 1))
        return MultiRateCodes(codes, valid, complete_frames=N // self.frame_size)

    def slot_index(self, num_positions: int) -> Tensor:
        """[N] the slot (0 .. F-1) of each of the first N stream positions."""
        return torch.arange(num_positions) % self.frame_size

    def level_index(self, num_positions: int) -> Tensor:
        """[N] the codebook level (0 .. K-1) of each of the first N stream positions."""
        return self.slot_level[self.slot_index(num_positions)]
