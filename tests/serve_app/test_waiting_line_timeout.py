"""A caller who waits longer than serve.waiting_line.max_wait_s is told 'busy' (a fleet of its own: the
wait limit is per deployment)."""

from __future__ import annotations

import asyncio

import pytest

from serve_helpers import API_KEY, GUARD_S, SESSIONS_PER_REPLICA, hold_a_session, let_go, run
from plexray.serve.app.clients import ChatClient, Refused

pytestmark = pytest.mark.timeout(240)

FLEET_OVERRIDES = [
    "serve.autoscaling={min_replicas: 1, max_replicas: 1}",
    "serve.waiting_line={max_callers_per_replica: 1, max_wait_s: 1}",
]


def test_a_caller_who_waited_too_long_gets_busy(serve_fleet):
    async def scenario():
        held = []
        try:
            for _ in range(SESSIONS_PER_REPLICA):
                await hold_a_session(serve_fleet, held)
            with pytest.raises(Refused) as busy:
                async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as waiter:
                    await asyncio.wait_for(waiter.handshake(), GUARD_S)
            return busy.value
        finally:
            await let_go(held)

    busy = run(scenario())
    assert busy.code == 1013 and busy.reason.startswith("busy")
    assert "no session slot came free within 1 s" in busy.message and "retry in" in busy.message
