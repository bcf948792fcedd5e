"""A replica's report counts callers and their outcomes, never the waiting line's retries (issue 25).

A caller in the waiting line asks the engine for a slot once per tick, and the engine counts each ask
on a full engine as a refusal: one browser waiting 30 s showed 374 refusals. Here a real engine (the
demo model, one slot) is full, a caller waits through several of those asks, and is then seated or
runs out of time: the replica's report moves once for it.
"""

from __future__ import annotations

import asyncio

import pytest

from plexray.serve.app.errors import CloseCode
from plexray.serve.app.ingress import SessionService
from plexray.serve.config import ServeConfig
from plexray.serve.engine import Engine, EngineConfig
from test_session_service import GUARD_S, Caller, LocalLedger

RETRIES = 3  # the engine's own refusal count the waiter must have made before the test goes on


@pytest.fixture(scope="module")
def full_engine(demo_checkpoint):
    """A real one-slot engine on the demo model (its loop not running: the test frees the slot itself)."""
    from plexray.model import load_model

    engine = Engine(load_model(str(demo_checkpoint)), EngineConfig(max_sessions=1))
    yield engine
    engine.close()


def replica_on(engine: Engine, max_wait_s: float) -> tuple[SessionService, LocalLedger]:
    ledger = LocalLedger()
    config = ServeConfig(sessions_per_replica=1, waiting_line={"max_callers_per_replica": 1, "max_wait_s": max_wait_s})
    return SessionService(engine, config, ledger, "r1"), ledger


async def until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def reported(replica: SessionService, ledger: LocalLedger) -> dict:
    await replica.report()
    return ledger.books.snapshot()["replicas"][0]["metrics"]


def test_a_caller_who_waits_and_is_seated_counts_once_as_opened_and_never_as_refused(full_engine):
    async def scenario():
        replica, ledger = replica_on(full_engine, max_wait_s=600)
        held = full_engine.open_session()  # the engine's one slot
        asks_before = full_engine.metrics()["sessions_refused"]
        caller = Caller()
        call = asyncio.create_task(replica.chat(caller))
        await until(lambda: full_engine.metrics()["sessions_refused"] >= asks_before + RETRIES)
        in_line = await reported(replica, ledger)
        held.close()  # the slot comes free: the waiter is seated at its next look
        await until(lambda: replica.sessions)
        seated = await reported(replica, ledger)
        caller.hung_up.set()
        await call
        return in_line, seated

    in_line, seated = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert in_line["sessions_refused"] == 0 and in_line["sessions_opened"] == 0
    assert seated["sessions_refused"] == 0 and seated["sessions_opened"] == 1
    assert seated["waited_by_outcome"] == {"seated": 1}


def test_a_caller_who_runs_out_of_time_in_the_line_counts_once_as_refused(full_engine):
    async def scenario():
        replica, ledger = replica_on(full_engine, max_wait_s=RETRIES * 0.08 + 0.2)  # a few ticks of asking
        held = full_engine.open_session()
        asks_before = full_engine.metrics()["sessions_refused"]
        caller = Caller()
        try:
            await replica.chat(caller)
        finally:
            held.close()
        return caller.closed, full_engine.metrics()["sessions_refused"] - asks_before, await reported(replica, ledger)

    closed, engine_asks, figures = asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    assert closed[0] == CloseCode.TRY_AGAIN_LATER and closed[1].startswith("busy")
    assert engine_asks >= RETRIES  # the engine saw the retries ...
    assert figures["sessions_refused"] == 1 and figures["sessions_refused_by_reason"] == {"busy": 1}  # ... the report one caller
    assert figures["sessions_opened"] == 0 and figures["waited_by_outcome"] == {"timed_out": 1}
