"""Confidence intervals of a metric over conversations, and whether base and tuned differ significantly.

Rates (take-over, yielded: values all 0 or 1) get a Wilson score interval, which stays inside [0, 1]
and is sound for the handful of conversations a toy run has. Continuous values (latencies, backchannel
rates, judge scores) get a percentile bootstrap interval of the mean: no normality assumed (latencies
are skewed, floored at 0). Differences are tested by a two-sided permutation test of the difference of
means. Every random draw comes from a fixed seed, so a report is reproducible.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np

CONFIDENCE = 0.95
Z_95 = 1.959963984540054  # standard normal quantile at 0.975
BOOTSTRAP_RESAMPLES = 10_000
PERMUTATIONS = 10_000
SIGNIFICANCE = 0.05
SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Mean of `count` values and its 95% confidence interval [low, high]; all None when count is 0."""

    mean: float | None
    count: int
    low: float | None
    high: float | None


@dataclasses.dataclass(frozen=True)
class Difference:
    """tuned mean - base mean, the permutation test's two-sided p-value, and p < 0.05."""

    delta: float | None
    p_value: float | None
    significant: bool


def _finite(values: tp.Iterable[float], what: str) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: expected a list of finite numbers (leave unmeasured ones out), got {array.tolist()}")
    return array


def is_rate(values: np.ndarray) -> bool:
    """True when every value is 0 or 1: a rate, estimated with Wilson's interval."""
    return bool(np.all((values == 0) | (values == 1)))


def estimate(values: tp.Iterable[float], *, binary: bool | None = None) -> Estimate:
    """Mean and 95% CI of `values`: Wilson for 0/1 rates, percentile bootstrap (seeded) for the rest.

    binary: force the choice; None decides from the values (all 0 or 1: a rate).
    """
    array = _finite(values, "estimate")
    if array.size == 0:
        return Estimate(None, 0, None, None)
    mean = float(array.mean())
    rate = is_rate(array) if binary is None else binary
    if rate:
        low, high = _wilson(int(array.sum()), array.size)
    else:
        rng = np.random.default_rng(SEED)
        means = array[rng.integers(0, array.size, size=(BOOTSTRAP_RESAMPLES, array.size))].mean(axis=1)
        low, high = (float(q) for q in np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return Estimate(mean, int(array.size), low, high)


def _wilson(successes: int, count: int) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion at 95%."""
    p = successes / count
    denominator = 1 + Z_95 ** 2 / count
    centre = (p + Z_95 ** 2 / (2 * count)) / denominator
    half = Z_95 * math.sqrt(p * (1 - p) / count + Z_95 ** 2 / (4 * count ** 2)) / denominator
    # The interval always holds p; at p = 0 or 1 the formula's rounding can put a bound a last bit past it.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def compare(base_values: tp.Iterable[float], tuned_values: tp.Iterable[float]) -> Difference:
    """Is the tuned mean different from the base mean? A two-sided permutation test (seeded).

    The p-value is the share of random relabellings of the pooled values whose |difference of means|
    is at least the observed one, counting the observed labelling itself (so never 0). With few
    values no relabelling is rare enough: 3 vs 3 can never reach p < 0.05, which is the truth.
    """
    base, tuned = _finite(base_values, "compare (base)"), _finite(tuned_values, "compare (tuned)")
    if base.size == 0 or tuned.size == 0:
        return Difference(None, None, False)
    observed = float(tuned.mean() - base.mean())
    pooled = np.concatenate([base, tuned])
    rng = np.random.default_rng(SEED)
    orders = np.argsort(rng.random((PERMUTATIONS, pooled.size)), axis=1)  # one random relabelling per row
    shuffled = pooled[orders]
    deltas = shuffled[:, base.size:].mean(axis=1) - shuffled[:, :base.size].mean(axis=1)
    # The tolerance keeps float rounding from counting an equal difference as smaller.
    extreme = int(np.sum(np.abs(deltas) >= abs(observed) - 1e-12))
    p_value = (extreme + 1) / (PERMUTATIONS + 1)
    return Difference(observed, p_value, p_value < SIGNIFICANCE)
