"""The fleet-wide admission ledger: who holds which session where, and who may open another.

A plain class (the `SessionLedger` deployment is a thin shell around it). Replicas ask it before
they open a session (or put the caller in their waiting line) and tell it when one ends; they also
report their live sessions and waiting callers every few seconds, which rebuilds the ledger after
a restart and frees the sessions of a replica that died (one silent for `3 * report_period_s`). Per-replica caps are enforced by the engines themselves;
the ledger adds what no single replica can see: per-key session limits and per-address rates.
A waiting caller counts towards its key's limit (a key cannot queue more than it may hold).

A caller told 'busy' pays nothing: an admission to a replica whose every slot is taken is charged to
the caller's rate budget only once a report shows it seated. A session released is not brought back
by a report taken before its release. The ledger is one replica that may restart: every wait on it
is bounded (BoundedLedger), and a caller it cannot answer is told so at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import time
import typing as tp

from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.app.security import Caller

logger = logging.getLogger("ray.serve")

RATE_WINDOW_S = 60.0
# A ledger call answers in milliseconds; one that takes this long is waiting for a restarting ledger.
LEDGER_ANSWER_S = 3.0
LEDGER_RETRY_AFTER_S = 5  # a restarted ledger is back within seconds (it is rebuilt from replica reports)


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
        self._uncharged: dict[str, str] = {}  # session id -> address: admitted to a full replica, not yet seated
        self._released: dict[str, float] = {}  # session id -> when: recent releases, which a stale report may list

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
                                  CloseCode.TRY_AGAIN_LATER, retry)
        if caller.key_name is not None and caller.key_session_limit is not None:
            held = self.sessions_of_key(caller.key_name)
            if held >= caller.key_session_limit:
                raise AdmissionDenied("key_limit", f"API key {caller.key_name!r} already holds {held} live "
                                                   f"sessions (its limit)", CloseCode.POLICY)
        report = self._replicas.setdefault(replica_id, ReplicaReport(capacity, {}, now))
        if len(report.sessions) < capacity:
            recent.append(now)
        else:  # the replica will answer 'busy' (or seat the caller later): charged once seated, if ever
            self._uncharged[session_id] = caller.address
        self._released.pop(session_id, None)
        report.sessions[session_id] = caller.key_name
        report.admitted_at[session_id] = now
        report.last_seen = now

    def release(self, replica_id: str, session_id: str) -> None:
        self._uncharged.pop(session_id, None)
        self._released[session_id] = self.clock()
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
        admitted within the last report window are kept even when the report does not list them yet. The
        other way round, a session released within that window stays released though the report lists it.
        """
        now = self.clock()
        self._released = {session_id: when for session_id, when in self._released.items()
                          if now - when < self.stale_after_s}
        previous = self._replicas.get(replica_id)
        merged = {session_id: key for session_id, key in sessions.items() if session_id not in self._released}
        for session_id in merged:  # seated: an admission that was not charged is charged now
            if session_id in self._uncharged:
                self._recent[self._uncharged.pop(session_id)].append(now)
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
            for session_id in self._replicas.pop(replica_id).sessions:
                self._uncharged.pop(session_id, None)


class BoundedLedger:
    """A ledger (the Serve handle of the SessionLedger deployment) whose every call answers within
    LEDGER_ANSWER_S, or fails.

    While the ledger restarts, calls to it wait for the new replica (10 s or more). A caller being
    admitted is told at once that admission is briefly unavailable (close 1013, retry after a few
    seconds), never left hanging; a release or report that cannot get through is made good by the
    replica's next report, which rebuilds the restarted ledger.
    """

    def __init__(self, ledger, answer_within_s: float | None = None):
        self.ledger = ledger
        self.answer_within_s = LEDGER_ANSWER_S if answer_within_s is None else answer_within_s

    async def admit(self, replica_id: str, session_id: str, caller: Caller, capacity: int) -> None:
        try:
            await self._bounded(self.ledger.admit(replica_id, session_id, caller, capacity))
        except AdmissionDenied:
            raise
        except Exception as exc:  # noqa: BLE001 - a timeout, or the handle's error for a ledger replica gone
            logger.warning("admission ledger unavailable: %s", exc)
            raise AdmissionDenied("ledger_unavailable", f"admission is briefly unavailable (the session ledger "
                                                        f"is restarting); retry in {LEDGER_RETRY_AFTER_S} s",
                                  CloseCode.TRY_AGAIN_LATER, LEDGER_RETRY_AFTER_S) from None

    async def release(self, replica_id: str, session_id: str) -> None:
        await self._bounded(self.ledger.release(replica_id, session_id))

    async def report(self, replica_id: str, capacity: int, sessions: dict, metrics: dict, waiting: dict) -> None:
        await self._bounded(self.ledger.report(replica_id, capacity, sessions, metrics, waiting))

    async def forget(self, replica_id: str) -> None:
        await self._bounded(self.ledger.forget(replica_id))

    async def snapshot(self) -> dict:
        return await self._bounded(self.ledger.snapshot())

    async def _bounded(self, call: tp.Awaitable):
        try:
            return await asyncio.wait_for(call, self.answer_within_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"the session ledger did not answer within {self.answer_within_s:g} s") from None
