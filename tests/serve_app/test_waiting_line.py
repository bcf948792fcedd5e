"""The waiting line for real: one full replica, a caller who waits and gets in, one the line cannot take.

A waiting caller's WebSocket is open but gets no handshake until it has a slot (NVIDIA's client shows
"Connecting..." meanwhile). /voice/status reports the line, so the test knows the caller is in it.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ghost_relay import GhostRelay
from serve_helpers import API_KEY, GUARD_S, SESSIONS_PER_REPLICA, hold_a_session, let_go, run, status, wait_until
from plexray.serve.app.clients import ChatClient, Refused

pytestmark = pytest.mark.timeout(240)

# One replica (no autoscaling: waiting callers count as load), one place in its line, a wait far
# longer than the test takes (test_waiting_line_timeout.py covers running out of time).
FLEET_OVERRIDES = [
    "serve.autoscaling={min_replicas: 1, max_replicas: 1}",
    "serve.waiting_line={max_callers_per_replica: 1, max_wait_s: 600}",
]


def test_a_waiting_caller_gets_the_next_free_slot_and_one_more_is_busy_at_once(serve_fleet):
    async def scenario():
        held = []
        try:
            for _ in range(SESSIONS_PER_REPLICA):
                await hold_a_session(serve_fleet, held)
            waiter_context = ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY)
            waiter = await waiter_context.__aenter__()  # the socket opens: the caller is in the line
            try:
                await asyncio.to_thread(wait_until, lambda: status(serve_fleet)["waiting"] == 1, 30,
                                        "the caller in the waiting line")
                with pytest.raises(Refused) as busy:  # the line's one place is taken: 'busy' at once
                    async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as extra:
                        await asyncio.wait_for(extra.handshake(), GUARD_S)
                first_context, first_draining = held.pop(0)  # a conversation ends ...
                await first_context.__aexit__(None, None, None)
                first_draining.cancel()
                await asyncio.wait_for(waiter.handshake(), GUARD_S)  # ... and the waiting caller gets its slot
                fleet = await asyncio.to_thread(
                    wait_until, lambda: (lambda f: f if f["waiting"] == 0 and f["live_sessions"] == 2 else None)(
                        status(serve_fleet)), 30, "the waiter counted as live")
                return busy.value, fleet
            finally:
                await waiter_context.__aexit__(None, None, None)
        finally:
            await let_go(held)

    busy, fleet = run(scenario())
    assert busy.code == 1013 and busy.reason.startswith("busy") and "1 callers are waiting" in busy.message
    assert fleet["replicas"][0]["live_sessions"] == SESSIONS_PER_REPLICA


def test_a_caller_who_hangs_up_and_calls_again_at_once_is_seated_not_told_busy(serve_fleet):
    """A hang-up reaches the replica after its caller has gone (Serve's proxy answers the close itself);
    here (GhostRelay) only once the replica has answered the next call, so that call meets its own ghost
    on a full replica. It waits in the line and is seated when the hang-up arrives."""
    async def scenario():
        held = []
        try:
            for _ in range(SESSIONS_PER_REPLICA - 1):
                await hold_a_session(serve_fleet, held)
            async with GhostRelay(serve_fleet) as relay:
                async with ChatClient.connect(relay.urls["ws"] + "/api/chat", api_key=API_KEY) as first:
                    await asyncio.wait_for(first.handshake(), GUARD_S)  # the replica's last slot
                    relay.hang_up()
                    await first.ws.wait_closed()
                async with ChatClient.connect(relay.urls["ws"] + "/api/chat", api_key=API_KEY) as again:
                    await asyncio.wait_for(again.handshake(), GUARD_S)  # raises Refused if told 'busy'
        finally:
            await let_go(held)

    run(scenario())


def test_waiting_metrics_reach_rays_prometheus_endpoint(serve_fleet, ray_cluster):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port

    def seated_wait_exported() -> str:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return text if 'outcome="seated"' in text and "ray_plexray_wait_seconds" in text else ""

    text = wait_until(seated_wait_exported, 120, "the seated caller's wait on Ray's Prometheus endpoint", poll_s=2)
    assert "ray_plexray_waiting_callers" in text
