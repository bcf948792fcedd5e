"""When the next speaker starts: floor-transfer offsets drawn from a shape like natural conversation's.

The floor-transfer offset is the next speaker's start minus the previous speaker's end: positive is a
gap, negative an overlap. In conversation it peaks near +200 ms with a long right tail, and short
overlaps are common (Stivers et al. 2009, "Universals and cultural variation in turn-taking in
conversation", PNAS 106(26), ten languages, modes 0-200 ms; Levinson & Torreira 2015, "Timing in
turn-taking and its implications for processing models of language", Frontiers in Psychology 6:731;
and issue 24 quotes a median of +80 ms for the CANDOR corpus of American English conversations,
Reece et al. 2023, Science Advances 9(13)). A full-duplex model learns its own answer timing from these offsets.

The shape is an ex-Gaussian: a normal (mean mu, spread sigma: the peak, and the overlaps on its left)
plus an exponential (mean tau: the long tail of slow answers). Defaults (`data.speech.timing`):
mu 50 ms, sigma 200 ms, tau 200 ms, i.e. peak near +200 ms, median near +225 ms, about 18% overlaps
and 28% of offsets in 0-200 ms. A speaker with its own `pause_ms` [low, high] (a persona, or a
scenario's counterpart) gets the same shape stretched so that its 10th and 90th percentiles are low
and high: a hesitant persona answers later, an impatient one sooner, both with natural variation.
"""

from __future__ import annotations

import functools
import random

import numpy as np
from scipy import stats

from plexray.data.config import TimingConfig

SPEAKER_RANGE_QUANTILES = (0.1, 0.9)  # a speaker's pause_ms [low, high] are these quantiles of its offsets


def _reference(timing: TimingConfig) -> stats.rv_continuous:
    """The ex-Gaussian of `timing` in ms (scipy's exponnorm: K = tau / sigma)."""
    return stats.exponnorm(timing.tau_ms / timing.sigma_ms, loc=timing.mu_ms, scale=timing.sigma_ms)


@functools.lru_cache(maxsize=64)
def _range_quantiles(mu_ms: float, sigma_ms: float, tau_ms: float) -> tuple[float, float]:
    """The reference's SPEAKER_RANGE_QUANTILES (a numerical inversion, ~2 ms: once per shape, not per draw)."""
    low, high = _reference(TimingConfig(mu_ms=mu_ms, sigma_ms=sigma_ms, tau_ms=tau_ms)).ppf(SPEAKER_RANGE_QUANTILES)
    return float(low), float(high)


def reference_pdf(timing: TimingConfig, offsets_ms: np.ndarray) -> np.ndarray:
    """The reference density (per ms) at `offsets_ms`, for plots against a dataset's offsets."""
    return _reference(timing).pdf(offsets_ms)


def draw_offset_s(timing: TimingConfig, pause_ms: tuple[int, int] | None, rng: random.Random) -> float:
    """One floor-transfer offset in seconds (negative: overlap), for a speaker with `pause_ms` or none."""
    offset_ms = rng.gauss(timing.mu_ms, timing.sigma_ms) + rng.expovariate(1.0 / timing.tau_ms)
    if pause_ms is not None:
        low_q, high_q = _range_quantiles(timing.mu_ms, timing.sigma_ms, timing.tau_ms)
        low, high = pause_ms
        offset_ms = low + (offset_ms - low_q) * (high - low) / (high_q - low_q)
    return offset_ms / 1000


def offset_summary(offsets_s: list[float]) -> dict:
    """What the manifest records of a dataset's offsets: count, median, share in 0-200 ms, share of overlaps."""
    if not offsets_s:
        return {"count": 0}
    offsets = np.asarray(offsets_s, dtype=np.float64)
    return {"count": int(offsets.size), "median_ms": round(float(np.median(offsets)) * 1000, 1),
            "share_0_200_ms": round(float(np.mean((offsets >= 0) & (offsets < 0.2))), 3),
            "share_overlaps": round(float(np.mean(offsets < 0)), 3)}
