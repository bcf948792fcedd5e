"""Confidence intervals and base-vs-tuned differences on samples whose answers are known."""

import numpy as np
import pytest

from plexray.evaluation.statistics import Difference, Estimate, compare, estimate


def test_rates_get_the_wilson_interval():
    # 8 of 10: Wilson's 95% interval is [0.4902, 0.9433] (by hand: centre 0.7167, half-width 0.2266).
    result = estimate([1] * 8 + [0] * 2)
    assert (result.mean, result.count) == (0.8, 10)
    assert result.low == pytest.approx(0.4902, abs=1e-4) and result.high == pytest.approx(0.9433, abs=1e-4)
    # All successes: the interval stays inside [0, 1] and still has width.
    allsuccesses = estimate([1, 1, 1])
    assert allsuccesses.high == 1.0 and 0.3 < allsuccesses.low < 0.5


@pytest.mark.parametrize("count", range(1, 40))
def test_an_interval_always_holds_its_mean(count):
    """All-0 and all-1 rates too: a bound a last bit past the mean broke the report's error bars."""
    for values in ([0] * count, [1] * count, [0.1] * count, [0, 1] * count):
        result = estimate(values)
        assert result.low <= result.mean <= result.high, (values, result)


def test_continuous_values_get_a_bootstrap_interval_around_the_mean():
    rng = np.random.default_rng(1)
    values = rng.normal(0.4, 0.1, size=400)
    result = estimate(values)
    assert result.count == 400 and result.mean == pytest.approx(values.mean())
    # The mean's standard error is 0.1 / 20 = 0.005: the 95% interval is about mean +- 0.0098.
    assert result.low < result.mean < result.high
    assert result.high - result.low == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.1)
    assert estimate(values) == result  # seeded: the same report twice
    assert estimate([0.25]) == Estimate(0.25, 1, 0.25, 0.25)


def test_no_values_no_estimate_and_bad_values_refused():
    assert estimate([]) == Estimate(None, 0, None, None)
    with pytest.raises(ValueError, match="finite"):
        estimate([0.1, float("nan")])


def test_identical_samples_are_never_significant():
    values = [0.2, 0.5, 0.9, 0.4, 0.3, 0.7]
    result = compare(values, values)
    assert result.delta == 0.0 and result.p_value == 1.0 and not result.significant
    assert not compare([1, 0, 1, 1, 0] * 4, [0, 1, 1, 0, 1] * 4).significant  # same rate, other order


def test_clearly_separated_samples_are_significant():
    base = [0.9, 1.1, 1.0, 0.95, 1.05, 1.02, 0.98, 1.01, 0.99, 1.03]
    tuned = [value - 0.5 for value in base]
    result = compare(base, tuned)
    assert result.delta == pytest.approx(-0.5) and result.p_value < 0.001 and result.significant
    assert compare([0] * 20, [1] * 20).significant


def test_three_against_three_can_never_be_significant():
    # Only 20 ways to split 6 values 3/3; the most extreme split has p = 2/20: the test knows it cannot tell.
    result = compare([0.0, 0.1, 0.2], [5.0, 5.1, 5.2])
    assert result.p_value == pytest.approx(0.1, abs=0.02) and not result.significant
    assert compare([], [1.0]) == Difference(None, None, False)
