"""Serving metrics through Ray's metrics API: shown in the Ray dashboard and on its Prometheus endpoint.

Names (Prometheus adds the `ray_` prefix): plexray_live_sessions, plexray_session_capacity,
plexray_sessions_opened, plexray_sessions_rejected{reason}, plexray_tick_ms_p50/p99,
plexray_late_ticks, plexray_frames_dropped, plexray_protocol_errors{protocol}, plexray_waiting_callers
(the replica's waiting line), plexray_wait_seconds{outcome} (how long callers waited: 'seated',
'timed_out', or 'hung_up') and plexray_retrieval_ms{persona} (knowledge retrieval at session start).
Engine totals are cumulative; `publish` turns them into counter increments.

`CallerCounts` is the same story in the replica's reports (/voice/status): one count per caller and
outcome. The engine's own `sessions_refused` counts every `open_session` on a full engine, which a
caller in the waiting line makes once per tick (one caller waiting 30 s: 374 "refusals").
"""

from __future__ import annotations

import collections
import dataclasses

from ray.util import metrics

WAIT_BUCKETS_S = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300]
RETRIEVAL_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]


class ReplicaTelemetry:
    def __init__(self, replica: str):
        tags = ("replica",)
        self._tags = {"replica": replica}
        self.live = metrics.Gauge("plexray_live_sessions", "live conversations on this replica", tags)
        self.capacity = metrics.Gauge("plexray_session_capacity", "session slots of this replica", tags)
        self.tick_p50 = metrics.Gauge("plexray_tick_ms_p50", "engine tick time, median (ms)", tags)
        self.tick_p99 = metrics.Gauge("plexray_tick_ms_p99", "engine tick time, 99th percentile (ms)", tags)
        self.opened = metrics.Counter("plexray_sessions_opened", "conversations started", tags)
        self.rejected = metrics.Counter("plexray_sessions_rejected", "new sessions refused, by reason",
                                        tags + ("reason",))
        self.late = metrics.Counter("plexray_late_ticks", "engine ticks past their 80 ms deadline", tags)
        self.dropped = metrics.Counter("plexray_frames_dropped", "agent frames dropped for slow clients", tags)
        self.protocol_errors = metrics.Counter("plexray_protocol_errors", "malformed client messages",
                                               tags + ("protocol",))
        self.waiting = metrics.Gauge("plexray_waiting_callers", "callers waiting for a session slot", tags)
        self.wait_seconds = metrics.Histogram(
            "plexray_wait_seconds", "time callers spent in the waiting line, by outcome", WAIT_BUCKETS_S,
            tags + ("outcome",))
        self.retrieval_ms = metrics.Histogram(
            "plexray_retrieval_ms", "knowledge retrieval at session start (search + token budget), ms",
            RETRIEVAL_BUCKETS_MS, tags + ("persona",))
        self._totals = {"late_ticks": 0, "frames_dropped": 0}

    def session_opened(self) -> None:
        self.opened.inc(1, self._tags)

    def session_rejected(self, reason: str) -> None:
        self.rejected.inc(1, {**self._tags, "reason": reason})

    def waiting_line(self, length: int) -> None:
        self.waiting.set(length, self._tags)

    def waited(self, seconds: float, outcome: str) -> None:
        self.wait_seconds.observe(seconds, {**self._tags, "outcome": outcome})

    def retrieval(self, milliseconds: float, persona: str) -> None:
        self.retrieval_ms.observe(milliseconds, {**self._tags, "persona": persona})

    def protocol_error(self, protocol: str) -> None:
        self.protocol_errors.inc(1, {**self._tags, "protocol": protocol})

    def publish(self, engine_metrics: dict) -> None:
        self.live.set(engine_metrics["active_sessions"], self._tags)
        self.capacity.set(engine_metrics["capacity"], self._tags)
        if engine_metrics.get("tick_ms_p50") is not None:
            self.tick_p50.set(engine_metrics["tick_ms_p50"], self._tags)
            self.tick_p99.set(engine_metrics["tick_ms_p99"], self._tags)
        for name, counter in (("late_ticks", self.late), ("frames_dropped", self.dropped)):
            delta = engine_metrics[name] - self._totals[name]
            if delta > 0:
                counter.inc(delta, self._tags)
                self._totals[name] = engine_metrics[name]


@dataclasses.dataclass
class CallerCounts:
    """What became of this replica's callers, each counted once: seated, refused (by reason) and, for
    those who waited in the line, how their wait ended ('seated', 'timed_out', 'hung_up')."""

    opened: int = 0
    refused: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # reason -> callers
    waited: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # outcome -> callers

    def summary(self) -> dict:
        """The figures of the replica's report (cumulative since the replica started)."""
        return {"sessions_opened": self.opened, "sessions_refused": sum(self.refused.values()),
                "sessions_refused_by_reason": dict(self.refused), "waited_by_outcome": dict(self.waited)}
