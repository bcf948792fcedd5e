"""Downscaling never cuts a live conversation: the replica Serve stops lets its session run to the end.

This module's fleet downscales after 1 s (the shared fleet never does). On one node Serve stops the
newest replica first (ray.serve._private.deployment_scheduler._get_replicas_to_stop), and new
sessions go to the replica with the fewest, so the conversation kept open sits on the replica
being stopped; the test checks that, rather than trusting it.
"""

from __future__ import annotations

import asyncio

import pytest

from serve_helpers import API_KEY, GUARD_S, SESSIONS_PER_REPLICA, replica_states, run, status, wait_until
from plexray.serve.app.clients import VoiceClient, frames_of

pytestmark = pytest.mark.timeout(240)
FLEET_OVERRIDES = ["serve.autoscaling.downscale_delay_s=1"]
AUDIO_WHILE_STOPPING = 10  # agent frames the kept conversation must still receive from the stopping replica


class HeldSession:
    """A JSON-protocol conversation whose events are collected in the background until the server closes."""

    def __init__(self, fleet):
        self.context = VoiceClient.connect(fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY)
        self.events: list[dict] = []

    async def open(self) -> "HeldSession":
        self.client = await self.context.__aenter__()
        await asyncio.wait_for(self.client.handshake(), GUARD_S)
        self.reader = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                self.events.append((await self.client.next_event())[1])
        except ConnectionClosed:
            pass

    def count(self, kind: str, since: int = 0) -> int:
        return sum(event["type"] == kind for event in self.events[since:])

    async def end(self) -> int:
        """End the conversation as a client does; returns the server's close code."""
        await self.client.send({"type": "end"})
        await asyncio.wait_for(self.reader, GUARD_S)
        await self.context.__aexit__(None, None, None)
        return self.client.close_code


def replica_sessions(fleet) -> dict[str, int]:
    return {replica["replica"]: replica["live_sessions"] for replica in status(fleet)["replicas"]}


def test_downscaling_lets_the_stopping_replicas_conversation_finish(serve_fleet, speech):
    async def scenario():
        def later(predicate, what, timeout_s=120):
            return asyncio.to_thread(wait_until, predicate, timeout_s, what)

        # Fill the first replica: load 2 > target 1 per replica, so Serve adds a second one.
        first = [await HeldSession(serve_fleet).open() for _ in range(SESSIONS_PER_REPLICA)]
        await later(lambda: replica_states().get("RUNNING") == 2, "autoscaling to 2 running replicas")
        def both_replicas_reporting():
            sessions = replica_sessions(serve_fleet)
            return sessions if len(sessions) == 2 else None

        sessions = await later(both_replicas_reporting, "the second replica's report")
        newest = next(replica for replica, live in sessions.items() if live == 0)

        kept = await HeldSession(serve_fleet).open()  # goes to the empty (newest) replica
        await later(lambda: replica_sessions(serve_fleet).get(newest) == 1, "the kept session on the new replica")
        first_codes = [await session.end() for session in first]

        # Load 1 -> one replica is enough: Serve stops the newest, the one holding the kept conversation.
        await later(lambda: replica_states().get("STOPPING") == 1, "Serve to start stopping a replica")
        stopping_since = len(kept.events)
        for frame in frames_of(speech):
            await kept.client.send_pcm(frame)
        await later(lambda: kept.count("audio_chunk", stopping_since) >= AUDIO_WHILE_STOPPING,
                    "agent audio from the stopping replica", GUARD_S)
        still_stopping = replica_states().get("STOPPING") == 1
        kept_code = await kept.end()
        # With its last conversation over, the replica finishes stopping long before its drain timeout.
        def one_replica_left():
            sessions = replica_sessions(serve_fleet)
            return sessions if len(sessions) == 1 and replica_states().get("STOPPING") is None else None

        remaining = await later(one_replica_left, "the stopped replica to leave")
        return first_codes, still_stopping, kept, kept_code, newest, remaining

    first_codes, still_stopping, kept, kept_code, newest, remaining = run(scenario())
    assert first_codes == [1000] * SESSIONS_PER_REPLICA
    assert still_stopping  # the audio above came while Serve was stopping the replica
    assert kept.events[-1] == {"type": "ended", "reason": "client_end"} and kept_code == 1000
    assert newest not in remaining  # the stopped replica was the one holding the kept conversation
