"""Engine-level metrics: tick time percentiles, late ticks, session counts, prefill cost.

Per-session counters (frames out and dropped, input underruns, bad audio) live on each session
and are summed by `Engine.metrics()`.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np


def percentile(values, q: float) -> float | None:
    """The q-th percentile of `values` (any sequence of numbers), rounded to 3 decimals; None if empty."""
    return round(float(np.percentile(np.asarray(values), q)), 3) if len(values) else None


@dataclasses.dataclass
class EngineMetrics:
    history: int
    ticks: int = 0
    late_ticks: int = 0  # real-time loop: ticks that finished after their 80 ms deadline
    resyncs: int = 0  # real-time loop: fell more than 1 s behind and restarted the schedule
    sessions_opened: int = 0
    sessions_refused: int = 0  # open_session while full
    sessions_ended: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    prefill_frames: int = 0

    def __post_init__(self):
        self.tick_ms: collections.deque[float] = collections.deque(maxlen=self.history)
        self.prefill_tick_ms: collections.deque[float] = collections.deque(maxlen=self.history)  # ticks with prefill
        self.session_prefill_ms: collections.deque[float] = collections.deque(maxlen=self.history)

    def snapshot(self) -> dict:
        pct = percentile
        return {
            "ticks": self.ticks,
            "tick_ms_p50": pct(self.tick_ms, 50), "tick_ms_p99": pct(self.tick_ms, 99),
            "tick_ms_max": pct(self.tick_ms, 100),
            "prefill_tick_ms_p50": pct(self.prefill_tick_ms, 50), "prefill_tick_ms_p99": pct(self.prefill_tick_ms, 99),
            "session_prefill_ms_p50": pct(self.session_prefill_ms, 50),
            "late_ticks": self.late_ticks, "resyncs": self.resyncs,
            "sessions_opened": self.sessions_opened, "sessions_refused": self.sessions_refused,
            "sessions_ended": dict(self.sessions_ended), "prefill_frames": self.prefill_frames,
        }
