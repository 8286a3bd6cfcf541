"""Confidence intervals for agreement rates, and how many samples it takes to tell two rates apart.

A rate is `successes` of `n` trials (clips whose key, tempo or instrument matches their caption). Its interval is
the Wilson score interval (Wilson 1927; recommended over the normal "Wald" interval by Brown, Cai & DasGupta 2001,
"Interval Estimation for a Binomial Proportion"): the set of true rates p for which the observed proportion is
within z standard errors sqrt(p (1 - p) / n), i.e. the roots of (p_hat - p)^2 = z^2 p (1 - p) / n:

    center = (p_hat + z^2 / 2n) / (1 + z^2 / n)
    half   = z / (1 + z^2 / n) * sqrt(p_hat (1 - p_hat) / n + z^2 / 4n^2)

Unlike the Wald interval it never leaves [0, 1] and does not collapse to a point at 0/n or n/n. Each trial is
taken as independent: clips generated from the same caption share their target, so with few distinct captions
the interval describes these captions, not captions in general.
"""
import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Rate:
    """An observed proportion with its confidence interval."""
    rate: float  # successes / n
    low: float
    high: float
    n: int  # trials


def z_value(confidence: float) -> float:
    """The two-sided standard-normal quantile of a confidence level: 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _wilson(proportion: float, n: int, z: float) -> tuple[float, float]:
    shrink = 1 + z * z / n
    center = (proportion + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    # At 0/n (n/n) center and half are equal and the bound is 0 (1); computed, it is off by round-off.
    low = 0.0 if proportion == 0 else center - half
    high = 1.0 if proportion == 1 else center + half
    return low, high


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of successes / n at the given two-sided confidence."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    return _wilson(successes / n, n, z_value(confidence))


def rate_of(hits: list[bool], confidence: float = 0.95) -> Rate | None:
    """The rate of True in `hits` with its Wilson interval; None when there are no trials."""
    if not hits:
        return None
    low, high = wilson_interval(sum(hits), len(hits), confidence)
    return Rate(rate=sum(hits) / len(hits), low=low, high=high, n=len(hits))


def intervals_overlap(first: Rate, second: Rate) -> bool:
    return first.low <= second.high and second.low <= first.high


def samples_to_separate(rate_a: float, rate_b: float, confidence: float = 0.95,
                        max_samples: int = 10**9) -> int | None:
    """The smallest n for which two rates, each observed on n trials, have non-overlapping Wilson intervals;
    None when the rates are equal (no n separates them) or it would take more than max_samples.

    Non-overlap is stricter than a two-proportion test at the same level (two intervals can overlap while the
    difference is significant), so this is what it takes to see the difference in the table, not a power analysis.
    A Wilson interval of a fixed proportion narrows as n grows, so separation is monotone in n: the answer is
    found by doubling, then bisection."""
    for name, value in (("rate_a", rate_a), ("rate_b", rate_b)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if rate_a == rate_b:
        return None
    lower, upper = sorted((rate_a, rate_b))
    z = z_value(confidence)

    def separated(n: int) -> bool:
        return _wilson(lower, n, z)[1] < _wilson(upper, n, z)[0]

    n = 1
    while not separated(n):
        if n > max_samples:
            return None
        n *= 2
    unseparated = n // 2  # 0 stands for "no n below 1"
    while n - unseparated > 1:
        middle = (n + unseparated) // 2
        if separated(middle):
            n = middle
        else:
            unseparated = middle
    return n if n <= max_samples else None
