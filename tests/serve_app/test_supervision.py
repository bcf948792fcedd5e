"""A replica whose engine fails: its sessions end with 'engine_failed', it admits nobody, /voice/status
and /voice/readyz stop counting its capacity, it fails Serve's health check and Serve replaces it.

This module's fleet has a single replica (so a handle call reaches the one that holds the session),
health checks every 0.5 s, and fault injection on: the test makes the engine's next tick raise
through a Serve handle method, which no caller can reach.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from serve_helpers import API_KEY, GUARD_S, SESSIONS_PER_REPLICA, run, status, wait_until
from plexray.serve.app.clients import Refused, VoiceClient, events_until

pytestmark = pytest.mark.timeout(400)
FLEET_OVERRIDES = ["serve.autoscaling.max_replicas=1", "serve.health_check_period_s=0.5",
                   "serve.fault_injection=true"]
REPLACEMENT_S = 240  # failure guard: Serve notices, stops the replica and starts one that loads the model


def replicas_with_capacity(fleet) -> set[str]:
    return {replica["replica"] for replica in status(fleet)["replicas"] if replica["capacity"] > 0}


def ready_capacity(fleet) -> int | None:
    """/voice/readyz's capacity once it answers 'ready' (200), else None."""
    answer = httpx.get(fleet["http"] + "/voice/readyz", timeout=10)
    return answer.json()["capacity"] if answer.status_code == 200 else None


async def try_a_session(fleet) -> dict | Refused:
    """The 'connected' message of a new session on the JSON route, or how it was refused."""
    try:
        async with VoiceClient.connect(fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as voice:
            return await asyncio.wait_for(voice.handshake(), GUARD_S)
    except Refused as refused:
        return refused


def test_a_failed_engine_ends_its_sessions_and_serve_replaces_the_replica(serve_fleet):
    from ray import serve

    (failed,) = wait_until(lambda: replicas_with_capacity(serve_fleet), 120, "the replica's first report")

    async def scenario():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as victim:
            await asyncio.wait_for(victim.handshake(), GUARD_S)
            handle = serve.get_deployment_handle("PersonaPlexReplica", app_name="plexray")
            await handle.inject_engine_fault.remote("test_supervision")
            events = []
            with pytest.raises(ConnectionClosed):
                while True:
                    events.append(await asyncio.wait_for(victim.next_event(), GUARD_S))
            # Right after: the failed replica (if Serve has not stopped it yet) refuses with 'try again
            # later'; once it is gone, the caller waits for the new one and is served there.
            caller_meanwhile = await try_a_session(serve_fleet)
        return [message for kind, message in events if kind == "ended"], victim.ws.close_reason, caller_meanwhile

    ended, close_reason, caller_meanwhile = run(scenario())
    assert [message["reason"] for message in ended] == ["engine_failed"] and close_reason == "engine_failed"
    if isinstance(caller_meanwhile, Refused):
        assert caller_meanwhile.code == 1013 and caller_meanwhile.reason.startswith("unavailable")
        assert "engine failed" in caller_meanwhile.message and "retry in" in caller_meanwhile.message
    else:
        assert caller_meanwhile["type"] == "connected"

    # The failed replica's capacity stops counting, then a new replica takes its place.
    wait_until(lambda: failed not in replicas_with_capacity(serve_fleet), REPLACEMENT_S,
               "/voice/status to stop counting the failed replica's capacity")
    (replacement,) = wait_until(lambda: replicas_with_capacity(serve_fleet), REPLACEMENT_S,
                                "a replacement replica's report")
    assert replacement != failed
    assert wait_until(lambda: ready_capacity(serve_fleet), REPLACEMENT_S, "/voice/readyz to answer ready") == \
        SESSIONS_PER_REPLICA

    async def new_conversation():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as voice:
            await asyncio.wait_for(voice.handshake(), GUARD_S)
            await voice.send_pcm(np.zeros(1920, np.float32))
            return await asyncio.wait_for(events_until(voice, lambda kind, _: kind == "audio_chunk"), GUARD_S)

    assert run(new_conversation())[-1][0] == "audio_chunk"
