"""Codebook interleaving patterns: codes [B, K, T] <-> one sequence [B, K, S] the transformer runs over.

A pattern lists, for every sequence step s, which (frame t, codebook q) coordinates it holds; every other place
holds the special token S (= card). Step 0 always holds only the special token, so the model's first input is
defined, and the logits at step s predict the tokens of step s + 1. The semantics follow AudioCraft's pattern
providers (`audiocraft/modules/codebooks_patterns.py`); the layouts are drawn in each provider's docstring.

A provider turns a number of frames into a `Pattern`: two index tensors computed once per (T, device), so building
and reverting are single gathers on the device, with no Python loop per call.
"""
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Coord = tuple[int, int]  # (frame t, codebook q)
Layout = list[list[Coord]]  # one list of coordinates per sequence step


@dataclass(frozen=True)
class Pattern:
    """The layout of K codebooks over T frames as index tensors.

    sequence_index:  [K, S] the frame read at (codebook q, step s), or T where the step holds the special token
    step_index:      [K, T] the step that holds frame t of codebook q
    first_steps:     for each frame t, the earliest step holding any codebook of frame t (plain ints, no device sync)
    """

    sequence_index: torch.Tensor
    step_index: torch.Tensor
    first_steps: tuple[int, ...]

    @classmethod
    def from_layout(cls, layout: Layout, num_codebooks: int, timesteps: int, device: torch.device) -> "Pattern":
        sequence_index = torch.full((num_codebooks, len(layout)), timesteps, dtype=torch.long)
        step_index = torch.full((num_codebooks, timesteps), -1, dtype=torch.long)
        for step, coords in enumerate(layout):
            for t, q in coords:
                if t < timesteps:
                    sequence_index[q, step] = t
                    step_index[q, t] = step
        if layout[0] or (step_index < 0).any():
            raise ValueError("a layout must start with an empty step and place every (frame, codebook) once")
        first_steps = tuple(step_index.min(dim=0).values.tolist())
        return cls(sequence_index.to(device), step_index.to(device), first_steps)

    @property
    def num_codebooks(self) -> int:
        return self.step_index.shape[0]

    @property
    def timesteps(self) -> int:
        return self.step_index.shape[1]

    @property
    def num_steps(self) -> int:
        return self.sequence_index.shape[1]

    def prompt_steps(self, frames: int) -> int:
        """Number of leading steps fully determined by the first `frames` frames (step 0 included)."""
        return self.num_steps if frames >= self.timesteps else min(self.first_steps[frames:])

    def build(self, codes: torch.Tensor, special_token: int) -> torch.Tensor:
        """codes [B, K, T] -> sequence [B, K, S], the special token where the layout places nothing."""
        B, K, T = codes.shape
        if (K, T) != (self.num_codebooks, self.timesteps):
            raise ValueError(f"codes [B, K, T] must have K={self.num_codebooks}, T={self.timesteps}, got {K}, {T}")
        padded = F.pad(codes, (0, 1), value=special_token)  # [B, K, T + 1], index T is the special token
        return padded.gather(2, self.sequence_index.expand(B, -1, -1))  # [B, K, S]

    def revert(self, sequence: torch.Tensor, special_token: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sequence [B, K, S'] (S' <= S steps generated so far) -> codes [B, K, T] and valid mask [K, T].

        Frames whose step is not among the S' given steps are invalid and hold the special token.
        """
        B, K, num_steps = sequence.shape
        valid = self.step_index < num_steps  # [K, T]
        index = self.step_index.clamp(max=num_steps - 1).expand(B, -1, -1)
        codes = sequence.gather(2, index)  # [B, K, T]
        return codes.masked_fill(~valid, special_token), valid

    def revert_logits(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, K, S', card] -> logits [B, K, T, card] aligned with the codes, and valid mask [K, T].

        The logits at step s predict step s + 1, so frame t of codebook q reads the logits of its step minus one.
        """
        B, K, num_steps, card = logits.shape
        source = self.step_index - 1  # [K, T], >= 0 since step 0 holds no frame
        valid = source < num_steps
        index = source.clamp(max=num_steps - 1)[None, :, :, None].expand(B, -1, -1, card)
        return logits.gather(2, index), valid  # [B, K, T, card]


class PatternProvider(ABC):
    """Builds the `Pattern` of a number of frames; patterns are cached per (frames, device)."""

    def __init__(self, num_codebooks: int):
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks
        self._patterns: dict[tuple[int, str], Pattern] = {}

    @abstractmethod
    def layout(self, timesteps: int) -> Layout:
        """The coordinates of each step for `timesteps` frames; coordinates with t >= timesteps are dropped."""

    def get_pattern(self, timesteps: int, device: torch.device | str = "cpu") -> Pattern:
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        key = (timesteps, str(device))
        if key not in self._patterns:
            self._patterns[key] = Pattern.from_layout(
                self.layout(timesteps), num_codebooks=self.num_codebooks, timesteps=timesteps, device=torch.device(device)
            )
        return self._patterns[key]


def _check_delays(delays: list[int], count: int, name: str = "delays") -> list[int]:
    delays = list(delays)
    if len(delays) != count:
        raise ValueError(f"{name} must have {count} entries, got {len(delays)}")
    if min(delays) < 0 or sorted(delays) != delays:
        raise ValueError(f"{name} must be non-negative and non-decreasing, got {delays}")
    return delays


class DelayPattern(PatternProvider):
    """Codebook q is shifted right by delays[q] steps (MusicGen: delays 0, 1, 2, 3). S = T + max(delays) + 1.

    K=3, T=4, delays 0, 1, 2 (S is the special token):
        [[S, a0, a1, a2, a3, S,  S ],
         [S, S,  b0, b1, b2, b3, S ],
         [S, S,  S,  c0, c1, c2, c3]]
    """

    def __init__(self, num_codebooks: int, delays: list[int] | None = None):
        super().__init__(num_codebooks)
        self.delays = _check_delays(range(num_codebooks) if delays is None else delays, num_codebooks)

    def layout(self, timesteps: int) -> Layout:
        steps: Layout = [[]]
        for position in range(timesteps + max(self.delays)):
            steps.append([(position - delay, q) for q, delay in enumerate(self.delays) if position >= delay])
        return steps


class ParallelPattern(DelayPattern):
    """All codebooks of a frame at the same step: a delay pattern with zero delays. S = T + 1.

        [[S, a0, a1, a2, a3],
         [S, b0, b1, b2, b3],
         [S, c0, c1, c2, c3]]
    """

    def __init__(self, num_codebooks: int):
        super().__init__(num_codebooks, delays=[0] * num_codebooks)


class UnrolledPattern(PatternProvider):
    """Flattening: each frame is unrolled into inner steps; flattening[q] is the inner step of codebook q, and
    codebooks sharing an inner step are emitted together, shifted by their (shared) delay. Steps are ordered by
    (frame + delay, frame, codebook) as in AudioCraft. Full flattening (default), K=3, T=2, S = K * T + 1:
        [[S, a0, S,  S,  a1, S,  S ],
         [S, S,  b0, S,  S,  b1, S ],
         [S, S,  S,  c0, S,  S,  c1]]
    flattening 0, 1, 1 and delays 0, 3, 3, T=4: codebooks 1 and 2 run three frames behind codebook 0 (frames >= T
    that the layout would place become special steps, as in AudioCraft):
        [[S, a0, a1, a2, S,  a3, S,  S,  S,  S,  S,  S ],
         [S, S,  S,  S,  b0, S,  b1, S,  b2, S,  b3, S ],
         [S, S,  S,  S,  c0, S,  c1, S,  c2, S,  c3, S ]]
    """

    def __init__(self, num_codebooks: int, flattening: list[int] | None = None, delays: list[int] | None = None):
        super().__init__(num_codebooks)
        flattening = list(range(num_codebooks)) if flattening is None else list(flattening)
        self.flattening = _check_delays(flattening, num_codebooks, name="flattening")
        self.delays = _check_delays([0] * num_codebooks if delays is None else delays, num_codebooks)
        self.groups: dict[int, list[int]] = {}
        for q, inner_step in enumerate(self.flattening):
            self.groups.setdefault(inner_step, []).append(q)
        for codebooks in self.groups.values():
            if len({self.delays[q] for q in codebooks}) > 1:
                raise ValueError(f"delays must be equal for codebooks flattened to the same step, got {self.delays}")

    def layout(self, timesteps: int) -> Layout:
        end = timesteps + max(self.delays)
        keyed: list[tuple[int, Coord, list[Coord]]] = []
        for t in range(end):
            for inner_step in range(max(self.flattening) + 1):
                codebooks = self.groups.get(inner_step)
                if codebooks is None:
                    keyed.append((t, (-1, -1), []))
                    continue
                position = t + self.delays[codebooks[0]]
                if position < end:
                    coords = [(t, q) for q in codebooks]
                    keyed.append((position, coords[0], coords))
        keyed.sort(key=lambda entry: (entry[0], entry[1]))
        return [[]] + [coords for _, _, coords in keyed]


class VallePattern(PatternProvider):
    """VALL-E / coarse first: all frames of codebook 0 first, then codebooks 1..K-1, in parallel by default or
    shifted by delays (one per codebook 1..K-1, AudioCraft's CoarseFirstPattern). K=3, T=3, S = 2T + 1:
        [[S, a0, a1, a2, S,  S,  S ],
         [S, S,  S,  S,  b0, b1, b2],
         [S, S,  S,  S,  c0, c1, c2]]
    Codebooks 1..K-1 are not causal in codebook 0: generate the full trained length at inference.
    """

    def __init__(self, num_codebooks: int, delays: list[int] | None = None):
        super().__init__(num_codebooks)
        if num_codebooks < 2:
            raise ValueError(f"num_codebooks must be >= 2 for the VALL-E pattern, got {num_codebooks}")
        self.delays = _check_delays([0] * (num_codebooks - 1) if delays is None else delays, num_codebooks - 1)

    def layout(self, timesteps: int) -> Layout:
        steps: Layout = [[]] + [[(t, 0)] for t in range(timesteps)]
        for position in range(timesteps + max(self.delays)):
            steps.append([(position - delay, q + 1) for q, delay in enumerate(self.delays) if position >= delay])
        return steps


class MusicLMPattern(PatternProvider):
    """Coarse-to-fine grouped flattening (MusicLM style): codebooks are split into groups of `group_by`; all frames
    of group 0 are flattened first (frame by frame, codebook by codebook), then group 1, and so on. S = K * T + 1.
    K=4, group_by=2, T=2:
        [[S, a0, S,  a1, S,  S,  S,  S,  S ],
         [S, S,  b0, S,  b1, S,  S,  S,  S ],
         [S, S,  S,  S,  S,  c0, S,  c1, S ],
         [S, S,  S,  S,  S,  S,  d0, S,  d1]]
    """

    def __init__(self, num_codebooks: int, group_by: int = 2):
        super().__init__(num_codebooks)
        if group_by < 1 or num_codebooks % group_by:
            raise ValueError(f"group_by must be >= 1 and divide num_codebooks={num_codebooks}, got {group_by}")
        self.group_by = group_by

    def layout(self, timesteps: int) -> Layout:
        steps: Layout = [[]]
        for first in range(0, self.num_codebooks, self.group_by):
            for t in range(timesteps):
                steps.extend([(t, q)] for q in range(first, first + self.group_by))
        return steps


PATTERNS = {"delay": DelayPattern, "parallel": ParallelPattern, "unroll": UnrolledPattern, "valle": VallePattern,
            "musiclm": MusicLMPattern}


@dataclass
class PatternConfig:
    """Which pattern, with its options; options a pattern does not use must stay None (refused otherwise)."""

    kind: str = "delay"
    delays: list[int] | None = None
    flattening: list[int] | None = None
    group_by: int | None = None


def make_pattern(config: PatternConfig, num_codebooks: int) -> PatternProvider:
    """The provider named by `config.kind`, e.g. make_pattern(PatternConfig(kind="delay"), num_codebooks=4)."""
    options = {"delays": config.delays, "flattening": config.flattening, "group_by": config.group_by}
    accepted = {"delay": {"delays"}, "parallel": set(), "unroll": {"flattening", "delays"}, "valle": {"delays"},
                "musiclm": {"group_by"}}
    if config.kind not in PATTERNS:
        raise ValueError(f"pattern kind must be one of {sorted(PATTERNS)}, got {config.kind!r}")
    for name, value in options.items():
        if value is not None and name not in accepted[config.kind]:
            raise ValueError(f"pattern option {name} is not used by the {config.kind!r} pattern, got {value}")
    given = {name: value for name, value in options.items() if value is not None}
    return PATTERNS[config.kind](num_codebooks, **given)
