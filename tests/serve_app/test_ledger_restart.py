"""The admission ledger as a dependency that may restart or lag: bounded waits, clear answers, fair books.

Most tests drive the ledger (or the status app) directly; a ledger that never answers stands in for
one that is restarting, which is what a Serve handle call to it does meanwhile. The last one pauses
the real ledger replica's process under Serve (SIGSTOP) and lets it go again (SIGCONT).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import httpx
import numpy as np
import pytest

from plexray.serve.app import admission
from plexray.serve.app.admission import AdmissionLedger, BoundedLedger
from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.app.ingress import status_app
from plexray.serve.app.security import Caller
from plexray.serve.config import ServeConfig
from serve_helpers import API_KEY, SESSIONS_PER_REPLICA, hold_a_session, let_go, run, status, wait_until

GUARD_S = 60  # failure guard: without the bound these calls never return (not a timing assertion)
# One replica: a caller beyond its sessions has nowhere else to go (no replica starting meanwhile).
FLEET_OVERRIDES = ["serve.autoscaling={min_replicas: 1, max_replicas: 1}"]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class RestartingLedger:
    """A ledger whose replica is gone: every call waits for one that does not come."""

    async def _never(self, *args):
        await asyncio.Event().wait()

    admit = release = report = forget = snapshot = _never


def test_busy_answers_cost_the_caller_nothing():
    ledger = AdmissionLedger(new_sessions_per_minute=2, report_period_s=1.0, clock=Clock())
    ledger.admit("r1", "held", Caller("10.0.0.9"), 1)  # the fleet's only slot
    for attempt in range(10):  # each one answered 'busy' by the replica, then released
        ledger.admit("r1", f"busy-{attempt}", Caller("10.0.0.1"), 1)
        ledger.release("r1", f"busy-{attempt}")
    ledger.release("r1", "held")
    ledger.admit("r1", "seated", Caller("10.0.0.1"), 1)  # the fleet emptied: the caller gets in at once


def test_a_caller_seated_from_the_waiting_line_is_charged():
    ledger = AdmissionLedger(new_sessions_per_minute=1, report_period_s=1.0, clock=Clock())
    ledger.admit("r1", "held", Caller("10.0.0.9"), 1)
    ledger.admit("r1", "waiter", Caller("10.0.0.1"), 1)  # full: not charged yet
    ledger.release("r1", "held")
    ledger.report("r1", 1, {"waiter": None}, {}, {})  # seated when the slot came free
    with pytest.raises(AdmissionDenied, match="too many new sessions"):
        ledger.admit("r1", "another", Caller("10.0.0.1"), 1)


def test_a_stale_report_does_not_bring_a_released_session_back():
    clock = Clock()
    ledger = AdmissionLedger(100, report_period_s=1.0, clock=clock)
    caller = Caller("10.0.0.1", "team", 1)
    ledger.admit("r1", "a", caller, 2)
    ledger.release("r1", "a")
    ledger.report("r1", 2, {"a": "team"}, {}, {})  # taken before the release, arriving after it
    assert ledger.sessions_of_key("team") == 0 and ledger.snapshot()["live_sessions"] == 0
    ledger.admit("r1", "b", caller, 2)  # the key's one session is free for its next call


def test_admission_answers_while_the_ledger_restarts():
    async def scenario():
        ledger = BoundedLedger(RestartingLedger(), answer_within_s=0.1)
        with pytest.raises(AdmissionDenied) as denied:
            await asyncio.wait_for(ledger.admit("r1", "a", Caller("10.0.0.1"), 2), GUARD_S)
        return denied.value

    denied = asyncio.run(scenario())
    assert denied.reason == "ledger_unavailable" and denied.close_code == CloseCode.TRY_AGAIN_LATER
    assert denied.retry_after_s and "retry in" in str(denied)


def test_status_answers_degraded_while_the_ledger_restarts(monkeypatch):
    monkeypatch.setattr(admission, "LEDGER_ANSWER_S", 0.1)  # keep the test short

    async def scenario():
        app = status_app(ServeConfig(), RestartingLedger())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ops") as client:
            status = await asyncio.wait_for(client.get("/status"), GUARD_S)
            ready = await asyncio.wait_for(client.get("/readyz"), GUARD_S)
        return status, ready

    status, ready = asyncio.run(scenario())
    assert status.status_code == 200 and status.json()["available"] is False and "ledger" in status.json()["degraded"]
    assert ready.status_code == 503 and ready.json()["ready"] is False


def _ledger_process() -> int:
    """The PID of the SessionLedger replica's actor process (from Ray's actor table)."""
    import ray._private.state

    ledgers = [actor["Pid"] for actor in ray._private.state.actors().values()
               if actor["ActorClassName"].endswith("SessionLedger") and actor["State"] == "ALIVE"]
    assert len(ledgers) == 1, f"expected one live ledger replica, found {len(ledgers)}"
    return ledgers[0]


def test_callers_and_status_are_answered_while_the_ledger_replica_is_paused(serve_fleet):
    from plexray.model.prompt import FRAME_SAMPLES
    from plexray.serve.app.clients import ChatClient, Refused, events_until

    async def call() -> Refused:
        with pytest.raises(Refused) as refused:
            async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as chat:
                await asyncio.wait_for(chat.handshake(), GUARD_S)
        return refused.value

    async def calls_with_the_replica_full_then_not(ledger: int) -> tuple[Refused, Refused]:
        held = []
        try:
            for _ in range(SESSIONS_PER_REPLICA):
                await hold_a_session(serve_fleet, held)
            with paused(ledger):  # as while Serve restarts it
                on_a_full_replica = await call()  # nobody could be seated: 'busy', without asking the ledger
            await let_go(held[-1:])
            del held[-1]
            one_free = lambda: status(serve_fleet)["live_sessions"] == SESSIONS_PER_REPLICA - 1  # noqa: E731
            await asyncio.to_thread(wait_until, one_free, GUARD_S, "the replica to free a slot")
            with paused(ledger):
                with_a_free_slot = await call()  # a slot is free, but admission needs the ledger
            return on_a_full_replica, with_a_free_slot
        finally:
            await let_go(held)

    async def converse() -> list:
        async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as chat:
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            await chat.send_pcm(np.zeros(4 * FRAME_SAMPLES, np.float32))
            return await asyncio.wait_for(events_until(chat, lambda kind, _: kind == "audio"), GUARD_S)

    ledger = _ledger_process()
    with paused(ledger):
        degraded = httpx.get(serve_fleet["http"] + "/voice/status", timeout=GUARD_S).json()
    assert degraded["available"] is False and "ledger" in degraded["degraded"]

    busy, unavailable = run(calls_with_the_replica_full_then_not(ledger))
    assert busy.code == CloseCode.TRY_AGAIN_LATER and busy.reason.startswith("busy")
    assert unavailable.code == CloseCode.TRY_AGAIN_LATER and unavailable.reason.startswith("ledger_unavailable")

    events = run(converse())  # the ledger is back: a normal conversation works
    assert events[-1][0] == "audio"


@contextlib.contextmanager
def paused(process: int):
    """The process stopped (SIGSTOP) for the block: it answers nothing, as a restarting replica."""
    os.kill(process, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process, signal.SIGCONT)
