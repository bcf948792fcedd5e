"""Floor-transfer offsets: the drawn shape against the configured ex-Gaussian, a speaker's pause range, the summary."""

import random

import numpy as np
import pytest
from scipy import stats

from plexray.data.config import TimingConfig
from plexray.data.timing import draw_offset_s, offset_summary, reference_pdf

DRAWS = 20000


def _draws(timing, pause_ms=None, seed=0):
    rng = random.Random(seed)
    return np.array([draw_offset_s(timing, pause_ms, rng) for _ in range(DRAWS)]) * 1000


def test_default_offsets_have_the_natural_shape():
    offsets = _draws(TimingConfig())
    # peak near +200 ms, median a little after it (the long right tail), overlaps common but a minority
    counts, edges = np.histogram(offsets, bins=np.arange(-1000, 2000, 100))
    assert 100 <= edges[np.argmax(counts)] <= 200
    assert 200 <= np.median(offsets) <= 250
    assert 0.15 <= np.mean(offsets < 0) <= 0.21
    assert 0.25 <= np.mean((offsets >= 0) & (offsets < 200)) <= 0.31
    assert np.percentile(offsets, 99) - np.median(offsets) > np.median(offsets) - np.percentile(offsets, 1)


@pytest.mark.parametrize("timing", [TimingConfig(), TimingConfig(mu_ms=0, sigma_ms=100, tau_ms=400)])
def test_drawn_quantiles_match_the_configured_ex_gaussian(timing):
    offsets = _draws(timing, seed=1)
    expected = stats.exponnorm(timing.tau_ms / timing.sigma_ms, loc=timing.mu_ms, scale=timing.sigma_ms)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(offsets, q) - expected.ppf(q)) < 15, q
    assert reference_pdf(timing, np.array([expected.ppf(0.5)]))[0] == pytest.approx(
        expected.pdf(expected.ppf(0.5)))


def test_a_speakers_pause_range_holds_eighty_percent_of_its_offsets():
    offsets = _draws(TimingConfig(), pause_ms=(480, 1200), seed=2)
    assert abs(np.quantile(offsets, 0.1) - 480) < 20 and abs(np.quantile(offsets, 0.9) - 1200) < 20
    assert np.mean((offsets >= 480) & (offsets <= 1200)) == pytest.approx(0.8, abs=0.02)


def test_offset_summary():
    assert offset_summary([-0.1, 0.05, 0.15, 0.3, 0.9]) == {
        "count": 5, "median_ms": 150.0, "share_0_200_ms": 0.4, "share_overlaps": 0.2}
    assert offset_summary([]) == {"count": 0}
