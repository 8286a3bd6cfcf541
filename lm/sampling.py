"""Token sampling and classifier-free guidance, without host synchronisation.

Sampling uses the exponential race: argmax(p / E) with E ~ Exp(1) i.i.d. picks index i with probability p_i
(the Gumbel-max trick in another form), so no `torch.multinomial` and no data-dependent Python branch per step.
E is drawn as -log(U), U ~ Uniform[0, 1): on CPU that is 3x faster than `Tensor.exponential_`. U is drawn for
every token of the codebook, kept tokens or not, so a token's noise does not depend on which others top-k keeps;
with one generator per batch item, an item's tokens depend on its own seed only, not on what shares the batch.
"""
from collections.abc import Sequence
from typing import NamedTuple

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None  # one for the batch, or one per batch item


class Sampling(NamedTuple):
    """One row's sampling parameters (`sample`'s), for batches whose rows sample differently (`sample_rows`)."""

    temperature: float
    top_k: int
    top_p: float


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Refuse invalid sampling parameters, naming the parameter and the allowed range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 <= top_p <= 1:
        raise ValueError(f"top_p must be in [0, 1] (0 = off), got {top_p}")


def guide(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, cfg_coef: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): uncond + cfg_coef * (cond - uncond), on logits.
    cfg_coef: one scale, or one per row ([B, 1, 1] for logits [B, K, card]), which gives each row the value it
    gets with its scale as a float."""
    return uncond_logits + cfg_coef * (cond_logits - uncond_logits)


def uniform_noise(shape: torch.Size, generator: Generators, device: torch.device) -> torch.Tensor:
    """U ~ Uniform[0, 1) of `shape` [B, ...]: from one generator, or row b from generator[b]."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, device=device)
    if len(generator) != shape[0]:
        raise ValueError(f"one generator per batch item: expected {shape[0]}, got {len(generator)}")
    return torch.stack([torch.rand(shape[1:], generator=item, device=device) for item in generator])


def sample(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
           generator: Generators = None) -> torch.Tensor:
    """logits [B, ..., card] -> tokens [B, ...].

    temperature 0 is greedy. top_k > 0 keeps the k most likely tokens; top_p > 0 then keeps the smallest set of the
    most likely tokens whose probability reaches top_p (both may be combined; AudioCraft uses top_p alone when set).
    """
    if temperature == 0 or top_k == 1:
        return logits.argmax(dim=-1)
    uniform = uniform_noise(logits.shape, generator, logits.device)  # [B, ..., card]
    indices = None
    if top_k > 0:  # before the temperature, which keeps the order: only the k kept logits are divided
        # [..., top_k]; the race needs the set, not its order: sorting is only for top_p's cumulative mass.
        logits, indices = logits.topk(top_k, dim=-1, sorted=top_p > 0)
    elif top_p > 0:
        logits, indices = logits.sort(dim=-1, descending=True)
    probs = (logits.float() / temperature).softmax(dim=-1)
    if top_p > 0:
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the more likely tokens; the first is always kept
        probs = probs.masked_fill(mass_before > top_p, 0.0)
    if indices is not None:
        uniform = uniform.gather(-1, indices)
    # U < 1, so E > 0 and p / E is never NaN; U = 0 gives E = inf, a token that cannot win (probability 2^-24).
    noise = uniform.log_().neg_()
    choice = (probs / noise).argmax(dim=-1, keepdim=True)
    return choice.squeeze(-1) if indices is None else indices.gather(-1, choice).squeeze(-1)


def sample_rows(logits: torch.Tensor, settings: Sequence[Sampling], generators: Sequence[torch.Generator]
                ) -> torch.Tensor:
    """logits [B, ..., card] -> tokens [B, ...], row b sampled with settings[b] and generators[b]: rows that share
    their settings are sampled together, so each row's tokens are the ones `sample` gives it alone."""
    if not len(settings) == len(generators) == logits.shape[0]:
        raise ValueError(f"settings and generators must give one entry per row ({logits.shape[0]}), got "
                         f"{len(settings)} and {len(generators)}")
    tokens = torch.empty(logits.shape[:-1], dtype=torch.long, device=logits.device)
    for setting in dict.fromkeys(settings):
        rows = [index for index, other in enumerate(settings) if other == setting]
        tokens[rows] = sample(logits[rows], *setting, generator=[generators[index] for index in rows])
    return tokens
