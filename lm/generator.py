"""The decode loop: pattern bookkeeping, classifier-free guidance, sampling, prompts and long-form windows.

One generation window works on the pattern sequence [B, K, S] of its frames: prompt codes and the pattern's
special tokens are written in before the loop, every other place holds UNKNOWN; each step samples all K
codebooks and fills only the UNKNOWN places, so prompt codes are kept verbatim and nothing is decided on the host.
Past the model's trained context, generation continues in windows (AudioCraft's extend_stride): each new window
re-prefills the last (context_frames - extend_stride_frames) generated frames as its prompt.
"""
import bisect
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from conditioners.tensors import ConditionTensors
from lm.lm import DecodeState, LMModel
from lm.patterns import Pattern, PatternProvider
from lm.sampling import Generators, check_sampling, guide, sample

UNKNOWN = -1  # a sequence place not generated yet
# How guidance runs: "off" (one branch), "doubled" (conditional and unconditional rows in one batch of 2B),
# "two_step" (one forward per branch).
Guidance = Literal["off", "doubled", "two_step"]


@dataclass
class GenerationConfig:
    """Sampling and guidance; the defaults are MusicGen's (configs/generation/default.yaml). How the decode steps
    run (int8 or fp16 weights, torch.compile, an int8 KV cache) is lm/backends/config.py's DecodeBackendConfig."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 250  # 0 = off
    top_p: float = 0.0  # 0 = off
    cfg_coef: float = 3.0  # guidance scale; 1 = no guidance (the null branch is then skipped)
    two_step_cfg: bool = False  # conditional and null branches as two forwards instead of one doubled batch
    context_frames: int | None = None  # longest window the model runs on; None = one window of any length
    extend_stride_frames: int | None = None  # frames each further window advances; required with context_frames

    def __post_init__(self) -> None:
        if self.cfg_coef < 0:
            raise ValueError(f"cfg_coef must be >= 0, got {self.cfg_coef}")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.context_frames is not None:
            if self.context_frames < 2:
                raise ValueError(f"context_frames must be >= 2, got {self.context_frames}")
            stride = self.extend_stride_frames
            if stride is None or not 1 <= stride < self.context_frames:
                raise ValueError(f"extend_stride_frames must be in [1, context_frames - 1 = "
                                 f"{self.context_frames - 1}] when context_frames is set, got {stride}")
        elif self.extend_stride_frames is not None:
            raise ValueError(f"extend_stride_frames needs context_frames, got {self.extend_stride_frames}")


class LMGenerator:
    """The decode loop around a model: the reference `LMModel`, or a backend's copy of it
    (`lm.backends.config.with_backend`)."""

    def __init__(self, model: LMModel, pattern: PatternProvider, config: GenerationConfig):
        if pattern.num_codebooks != model.config.num_codebooks:
            raise ValueError(f"pattern num_codebooks must equal the model's {model.config.num_codebooks}, "
                             f"got {pattern.num_codebooks}")
        if config.top_k > model.config.card:
            raise ValueError(f"top_k must be in [0, card={model.config.card}], got {config.top_k}")
        self.model, self.pattern, self.config = model, pattern, config

    def windows(self, num_frames: int) -> list[tuple[int, int]]:
        """(first frame, frames) of each generation window."""
        context = self.config.context_frames or num_frames
        windows = [(0, min(context, num_frames))]
        while sum(windows[-1]) < num_frames:
            start = windows[-1][0] + self.config.extend_stride_frames
            windows.append((start, min(context, num_frames - start)))
        return windows

    def generate(self, num_frames: int, conditions: ConditionTensors | None = None, prompt: torch.Tensor | None = None,
                 batch_size: int | None = None, generator: Generators = None,
                 progress: Callable[[int, int], None] | None = None,
                 negative: ConditionTensors | None = None) -> torch.Tensor:
        """Generate codes [B, K, num_frames]; the arguments are `stream`'s."""
        for codes, _ in self.stream(num_frames, conditions, prompt, batch_size, generator, progress, negative):
            pass
        return codes

    @torch.inference_mode()
    def stream(self, num_frames: int, conditions: ConditionTensors | None = None, prompt: torch.Tensor | None = None,
               batch_size: int | None = None, generator: Generators = None,
               progress: Callable[[int, int], None] | None = None,
               negative: ConditionTensors | None = None) -> Iterator[tuple[torch.Tensor, int]]:
        """Generate codes [B, K, num_frames], yielding (codes, final) whenever more leading frames are final:
        codes[:, :, :final] will not change any more (with the delay pattern, frame t is final at step t + max
        delay); later frames hold UNKNOWN. The last yield has final = num_frames.

        conditions: the batch's conditions (None = unconditional); with cfg_coef != 1 the null branch is
                    `conditions.null()`, so each example's tokens do not depend on the rest of the batch.
        prompt:     [B, K, T0] codes kept verbatim as the first T0 frames (T0 <= num_frames and <= context_frames).
        batch_size: needed only when neither conditions nor prompt give B.
        generator:  where the sampling noise comes from: one torch.Generator for the batch, or one per item, which
                    makes each item's tokens a function of its own seed whatever else shares the batch.
        progress:   called as progress(step, total) after every decoded pattern step.
        negative:   conditions to guide away from (same shapes as `conditions`), in place of the null condition:
                    uncond + cfg_coef * (cond - uncond) with uncond computed under `negative`.
        """
        K = self.model.config.num_codebooks
        if num_frames <= 0:
            raise ValueError(f"num_frames must be > 0, got {num_frames}")
        sizes = {size for size in (batch_size, None if prompt is None else prompt.shape[0],
                                   None if conditions is None else _condition_batch(conditions)) if size is not None}
        if len(sizes) != 1:
            raise ValueError(f"batch_size, prompt and conditions must agree on one batch size, got {sorted(sizes)}")
        B = sizes.pop()
        if not (generator is None or isinstance(generator, torch.Generator) or len(generator) == B):
            raise ValueError(f"generator must be one torch.Generator or one per batch item ({B}), got {len(generator)}")
        if negative is not None and (conditions is None or _condition_batch(negative) != B):
            raise ValueError(f"negative conditions need conditions and the same batch size {B}")
        device = self.model.embedding.weight.device
        codes = torch.full((B, K, num_frames), UNKNOWN, dtype=torch.long, device=device)
        known = 0
        if prompt is not None:
            known = prompt.shape[2]
            if prompt.shape[1] != K or known > min(num_frames, self.config.context_frames or num_frames):
                raise ValueError(f"prompt must be [B, K={K}, T0] with T0 <= num_frames and <= context_frames, "
                                 f"got {tuple(prompt.shape)}")
            codes[:, :, :known] = prompt
        windows = self.windows(num_frames)
        total, done = 0, 0
        plans = []
        for start, frames in windows:
            pattern = self.pattern.get_pattern(frames, device)
            plans.append((start, frames, pattern, known - start, pattern.prompt_steps(known - start)))
            total += pattern.num_steps - plans[-1][4]
            known = start + frames
        for start, frames, pattern, prompt_frames, prompt_steps in plans:
            window = codes[:, :, start:start + frames]
            for final in self._generate_window(window, pattern, prompt_frames, prompt_steps, conditions, negative,
                                               generator, progress, done, total):
                yield codes, start + final
            done += pattern.num_steps - prompt_steps

    def _generate_window(self, codes: torch.Tensor, pattern: Pattern, prompt_frames: int, prompt_steps: int,
                         conditions: ConditionTensors | None, negative: ConditionTensors | None, generator: Generators,
                         progress: Callable[[int, int], None] | None, done: int, total: int) -> Iterator[int]:
        """Fill codes [B, K, T] (prompt frames first, UNKNOWN after) in place, yielding the number of leading
        frames that are final each time it grows."""
        B, K, T = codes.shape
        config, special = self.config, self.model.special_token
        sequence = pattern.build(codes, special_token=special)  # [B, K, S]: prompt, special tokens, UNKNOWN
        # Frame t is final once the last step holding one of its codebooks is sampled (running max: leading frames);
        # prompt frames are final from the start.
        final_after = list(itertools.accumulate(pattern.step_index.amax(dim=0).tolist(), max))  # [T]
        final = max(prompt_frames, bisect.bisect_right(final_after, prompt_steps - 1))
        yield final
        guidance = self._guidance(conditions)
        states = self._start(guidance, B, pattern.num_steps, conditions, negative)
        logits = self._next_logits(sequence[:, :, :prompt_steps], guidance, states)  # [B, K, card]
        for step in range(prompt_steps, pattern.num_steps):
            tokens = sample(logits, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p,
                            generator=generator)  # [B, K]
            current = sequence[:, :, step]
            sequence[:, :, step] = torch.where(current == UNKNOWN, tokens, current)
            if progress is not None:
                progress(done + step - prompt_steps + 1, total)
            now_final = bisect.bisect_right(final_after, step)
            if now_final > final:
                reverted, _ = pattern.revert(sequence[:, :, :step + 1], special)  # [B, K, T]
                codes[:, :, final:now_final] = reverted[:, :, final:now_final]
                final = now_final
                yield final
            if step + 1 < pattern.num_steps:
                logits = self._next_logits(sequence[:, :, step:step + 1], guidance, states)

    def _guidance(self, conditions: ConditionTensors | None) -> Guidance:
        if conditions is None or self.config.cfg_coef == 1:
            return "off"
        return "two_step" if self.config.two_step_cfg else "doubled"

    def _start(self, guidance: Guidance, batch_size: int, capacity: int, conditions: ConditionTensors | None,
               negative: ConditionTensors | None) -> list[DecodeState]:
        """The decode states `guidance` runs on: one state; one state of the conditional then the unconditional
        rows ("doubled"); or (conditional, unconditional) states ("two_step"). Unconditional = the negative
        conditions when given, else the null condition."""
        if guidance == "off":
            return [self.model.start_decoding(batch_size, capacity, conditions)]
        unconditional = conditions.null() if negative is None else negative
        if guidance == "two_step":
            return [self.model.start_decoding(batch_size, capacity, conditions),
                    self.model.start_decoding(batch_size, capacity, unconditional)]
        return [self.model.start_decoding(2 * batch_size, capacity, conditions.cat(unconditional))]

    def _next_logits(self, steps: torch.Tensor, guidance: Guidance, states: list[DecodeState]) -> torch.Tensor:
        """steps [B, K, N] -> the (guided) logits [B, K, card] predicting the step after the last one."""
        if guidance == "off":
            return self.model.decode(steps, states[0])[:, :, -1]
        if guidance == "two_step":
            cond, uncond = (self.model.decode(steps, state)[:, :, -1] for state in states)
        else:
            both = self.model.decode(torch.cat([steps, steps]), states[0])[:, :, -1]  # [2B, K, card]
            cond, uncond = both.chunk(2)
        return guide(cond, uncond, self.config.cfg_coef)


def _condition_batch(conditions: ConditionTensors) -> int | None:
    for value in (conditions.cross, conditions.prepend, conditions.add):
        if value is not None:
            return value.shape[0]
    return None
