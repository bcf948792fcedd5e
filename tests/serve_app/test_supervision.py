"""A replica whose engine fails: its live sessions (both protocols) end with 'engine_failed', it admits nobody, /voice/status
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
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.app.clients import ChatClient, Refused, VoiceClient, events_until, frames_of

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


async def events_until_closed(client) -> list:
    """Every event the server sends until it closes the connection."""
    events = []
    with pytest.raises(ConnectionClosed):
        while True:
            events.append(await asyncio.wait_for(client.next_event(), GUARD_S))
    return events


def test_a_failed_engine_ends_its_sessions_and_serve_replaces_the_replica(serve_fleet):
    """Two live conversations, one per protocol, both talking when the engine fails: each is closed at
    once (every read has GUARD_S) with 1011 'engine_failed', the JSON one told so in an 'ended' message."""
    from ray import serve

    (failed,) = wait_until(lambda: replicas_with_capacity(serve_fleet), 120, "the replica's first report")

    async def scenario():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as voice, \
                ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as chat:
            await asyncio.wait_for(voice.handshake(), GUARD_S)
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            for frame in frames_of(np.zeros(5 * FRAME_SAMPLES, np.float32)):  # the callers talk ...
                await voice.send_pcm(frame)
                await chat.send_pcm(frame)
            await events_until(voice, lambda kind, _: kind == "audio_chunk")  # ... and hear the agent
            await events_until(chat, lambda kind, pcm: kind == "audio" and len(pcm) > 0)
            handle = serve.get_deployment_handle("PersonaPlexReplica", app_name="plexray")
            await handle.inject_engine_fault.remote("test_supervision")
            voice_events, chat_events = await asyncio.gather(events_until_closed(voice), events_until_closed(chat))
            # Right after: the failed replica (if Serve has not stopped it yet) refuses with 'try again
            # later'; once it is gone, the caller waits for the new one and is served there.
            caller_meanwhile = await try_a_session(serve_fleet)
        closes = {"voice": (voice.close_code, voice.ws.close_reason), "chat": (chat.close_code, chat.ws.close_reason)}
        return voice_events, chat_events, closes, caller_meanwhile

    voice_events, chat_events, closes, caller_meanwhile = run(scenario())
    # The JSON protocol says so in an 'ended' message; the binary one has no such message (NVIDIA's
    # client reads the close frame), and neither gets an error for its audio sent meanwhile.
    assert [message["reason"] for kind, message in voice_events if kind == "ended"] == ["engine_failed"]
    assert not [kind for kind, _ in voice_events + chat_events if kind == "error"], (voice_events, chat_events)
    assert closes == {"voice": (1011, "engine_failed"), "chat": (1011, "engine_failed")}
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
