"""The server mints session ids; a client's ?session_id= is only a label, which no key limit or
release can be influenced by (the books of the replica and of the ledger are keyed by the server's ids)."""

from __future__ import annotations

import asyncio

from serve_helpers import API_KEY, GUARD_S, LIMITED_KEY, run, status, wait_until
from plexray.serve.app.clients import Refused, VoiceClient


async def try_a_session(fleet, api_key: str, session_id: str) -> dict | Refused:
    """The 'connected' message of a session that is ended again at once, or how it was refused."""
    try:
        async with VoiceClient.connect(fleet["ws"] + "/ws/voice/assistant", api_key=api_key,
                                       session_id=session_id) as voice:
            return await asyncio.wait_for(voice.handshake(), GUARD_S)
    except Refused as refused:
        return refused


def test_one_label_on_many_sessions_neither_lifts_a_key_limit_nor_releases_another_session(serve_fleet):
    """LIMITED_KEY may hold 1 session. It holds one labelled 'shared'; another key's caller uses the same label."""
    wait_until(lambda: status(serve_fleet)["live_sessions"] == 0, 60, "the previous tests' sessions to end")

    async def scenario():
        url = serve_fleet["ws"] + "/ws/voice/assistant"
        async with VoiceClient.connect(url, api_key=LIMITED_KEY, session_id="shared") as held:
            connected = await asyncio.wait_for(held.handshake(), GUARD_S)
            assert connected["session_id"] == "shared"  # echoed to the client as its label
            async with VoiceClient.connect(url, api_key=API_KEY, session_id="shared") as other:
                await asyncio.wait_for(other.handshake(), GUARD_S)
                assert_key_limit(await try_a_session(serve_fleet, LIMITED_KEY, "shared"))
                assert_key_limit(await try_a_session(serve_fleet, LIMITED_KEY, "another"))
            # The other caller has hung up: once the fleet has released its session, the limited key
            # still holds its own.
            await asyncio.to_thread(wait_until, lambda: status(serve_fleet)["live_sessions"] == 1, 60,
                                    "the fleet to count only the limited key's session")
            assert_key_limit(await try_a_session(serve_fleet, LIMITED_KEY, "shared"))

    run(scenario())


def assert_key_limit(attempt: dict | Refused) -> None:
    assert isinstance(attempt, Refused), f"admitted past the key's limit: {attempt}"
    assert attempt.code == 1008 and "already holds 1 live sessions" in attempt.message


def test_a_label_is_bounded_and_ids_are_the_servers(serve_fleet):
    connected = run(try_a_session(serve_fleet, API_KEY, "line\nbreak\r\x00"))
    assert connected["session_id"] == "line\nbreak\r\x00"
    unlabelled = run(try_a_session(serve_fleet, API_KEY, ""))
    assert len(unlabelled["session_id"]) == 32  # a uuid4 the server minted
    too_long = run(try_a_session(serve_fleet, API_KEY, "x" * 129))
    assert isinstance(too_long, Refused) and too_long.code == 1008 and "session_id has 129 characters" in too_long.message
