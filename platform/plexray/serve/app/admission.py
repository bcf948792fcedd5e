"""The fleet-wide admission ledger: who holds which session where, and who may open another.

A plain class (the `SessionLedger` deployment is a thin shell around it). Replicas ask it before
they open a session (or put the caller in their waiting line) and tell it when one ends; they also
report their live sessions and waiting callers every few seconds, which rebuilds the ledger after
a restart and frees the sessions of a replica that died (one silent for `3 * report_period_s`). Per-replica caps are enforced by the engines themselves;
the ledger adds what no single replica can see: per-key session limits and per-address rates.
A waiting caller counts towards its key's limit (a key cannot queue more than it may hold).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
import typing as tp

from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.security import Caller

CLOSE_POLICY, CLOSE_TRY_AGAIN_LATER = 1008, 1013
RATE_WINDOW_S = 60.0


@dataclasses.dataclass
class ReplicaReport:
    capacity: int
    sessions: dict[str, str | None]  # session id -> API key name (None: no key)
    last_seen: float
    metrics: dict = dataclasses.field(default_factory=dict)
    waiting: dict[str, str | None] = dataclasses.field(default_factory=dict)  # callers in the waiting line
    admitted_at: dict[str, float] = dataclasses.field(default_factory=dict)  # sessions admitted here, when


class AdmissionLedger:
    def __init__(self, new_sessions_per_minute: int, report_period_s: float,
                 clock: tp.Callable[[], float] = time.monotonic):
        self.rate_limit = new_sessions_per_minute
        self.stale_after_s = 3 * report_period_s
        self.clock = clock
        self._replicas: dict[str, ReplicaReport] = {}
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def admit(self, replica_id: str, session_id: str, caller: Caller, capacity: int) -> None:
        """Record a new session, or raise AdmissionDenied ('rate_limited' or 'key_limit')."""
        now = self.clock()
        self._expire(now)
        recent = self._recent[caller.address]
        while recent and recent[0] <= now - RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= self.rate_limit:
            retry = max(1, math.ceil(recent[0] + RATE_WINDOW_S - now))
            raise AdmissionDenied("rate_limited", f"too many new sessions from this address "
                                                  f"({self.rate_limit} per minute); retry in {retry} s",
                                  CLOSE_TRY_AGAIN_LATER, retry)
        if caller.key_name is not None and caller.key_session_limit is not None:
            held = self.sessions_of_key(caller.key_name)
            if held >= caller.key_session_limit:
                raise AdmissionDenied("key_limit", f"API key {caller.key_name!r} already holds {held} live "
                                                   f"sessions (its limit)", CLOSE_POLICY)
        recent.append(now)
        report = self._replicas.setdefault(replica_id, ReplicaReport(capacity, {}, now))
        report.sessions[session_id] = caller.key_name
        report.admitted_at[session_id] = now
        report.last_seen = now

    def release(self, replica_id: str, session_id: str) -> None:
        report = self._replicas.get(replica_id)
        if report is not None:
            report.sessions.pop(session_id, None)
            report.waiting.pop(session_id, None)
            report.admitted_at.pop(session_id, None)

    def report(self, replica_id: str, capacity: int, sessions: dict[str, str | None], metrics: dict,
               waiting: dict[str, str | None]) -> None:
        """A replica's heartbeat: its capacity, every live session it holds, its engine metrics and the
        callers in its waiting line.

        A report may have been taken just before a session was admitted and arrive just after: sessions
        admitted within the last report window are kept even when the report does not list them yet.
        """
        now = self.clock()
        previous = self._replicas.get(replica_id)
        merged = dict(sessions)
        admitted_at = {}
        if previous is not None:
            for session_id, when in previous.admitted_at.items():
                if now - when < self.stale_after_s:
                    if session_id not in waiting:
                        merged.setdefault(session_id, previous.sessions.get(session_id))
                    admitted_at[session_id] = when
        self._replicas[replica_id] = ReplicaReport(capacity, merged, now, metrics, waiting=dict(waiting),
                                                   admitted_at=admitted_at)

    def forget(self, replica_id: str) -> None:
        """A replica shutting down cleanly."""
        self._replicas.pop(replica_id, None)

    def sessions_of_key(self, key_name: str) -> int:
        return sum(name == key_name for report in self._replicas.values()
                   for name in (*report.sessions.values(), *report.waiting.values()))

    def snapshot(self) -> dict:
        self._expire(self.clock())
        replicas = [{"replica": replica_id, "capacity": report.capacity, "live_sessions": len(report.sessions),
                     "waiting": len(report.waiting), "metrics": report.metrics}
                    for replica_id, report in sorted(self._replicas.items())]
        return {"replicas": replicas,
                "capacity": sum(r["capacity"] for r in replicas),
                "live_sessions": sum(r["live_sessions"] for r in replicas),
                "waiting": sum(r["waiting"] for r in replicas)}

    def _expire(self, now: float) -> None:
        for replica_id in [r for r, report in self._replicas.items() if now - report.last_seen > self.stale_after_s]:
            del self._replicas[replica_id]
