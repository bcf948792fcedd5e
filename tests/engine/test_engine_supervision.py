"""The engine without Ray: a tick that raises fails it cleanly, a closed slot is free at once, a join
does its device work in the tick thread and never costs a talking session a frame."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading

import pytest

from plexray.serve.engine import EngineFullError, EngineUnavailableError, SessionSettings
from plexray.serve.engine import prompt_plan

TALKER = SessionSettings(text_prompt="You are a friendly teacher.", voice="NATF0", text_seed=1, audio_seed=2)
JOINER = SessionSettings(text_prompt="You sell insurance.", voice="VARM0", text_seed=3, audio_seed=4)
GUARD_S = 60  # failure guard for awaiting the engine (never a timing assertion)


def tick_until_ready(engine, session, limit: int = 200) -> None:
    for _ in range(limit):
        if session.ready:
            return
        engine.tick()
    raise AssertionError(f"session not ready after {limit} ticks")


def drain(session) -> int:
    count = 0
    while session.poll_output() is not None:
        count += 1
    return count


@pytest.mark.parametrize("failing", ["injected fault", "component raising mid-tick"])
def test_a_failed_tick_ends_every_session_and_refuses_new_ones(make_engine, monkeypatch, failing):
    engine = make_engine(max_sessions=3)
    live = engine.open_session(TALKER)
    tick_until_ready(engine, live)
    pending = engine.open_session(JOINER)  # not yet seated: the failing tick is its first
    if failing == "injected fault":
        engine.inject_fault("as a test asks")
        expected = "RuntimeError: injected fault: as a test asks"
    else:  # a model component raising after the tick's first phases, as a CUDA error would
        def out_of_memory(*args, **kwargs):
            raise RuntimeError("CUDA out of memory (simulated)")

        monkeypatch.setattr(engine._mimi, "decode", out_of_memory)
        expected = "RuntimeError: CUDA out of memory (simulated)"

    async def run_until_failure():
        with pytest.raises(EngineUnavailableError, match="the engine failed") as failed:
            await asyncio.wait_for(engine.run(), GUARD_S)
        # Both callers learn it the way they wait for the engine: the outputs end, the handshake never comes.
        while await asyncio.wait_for(live.next_output(), GUARD_S) is not None:
            pass
        assert await asyncio.wait_for(pending.wait_ready(), GUARD_S) is False
        return failed.value

    failure = asyncio.run(run_until_failure())
    assert str(failure) == f"the engine failed: {expected}"
    assert engine.failure == expected
    assert live.ended_reason == "engine_failed" and pending.ended_reason == "engine_failed"
    assert engine.active_sessions == 0
    with pytest.raises(EngineUnavailableError, match=re.escape(f"the engine failed ({expected}) and takes no sessions")):
        engine.open_session(TALKER)
    with pytest.raises(EngineUnavailableError):  # nor does it start again
        asyncio.run(engine.run())


def test_a_closed_sessions_slot_is_free_at_once(make_engine):
    engine = make_engine(max_sessions=1)
    first = engine.open_session(TALKER)
    tick_until_ready(engine, first)
    with pytest.raises(EngineFullError):
        engine.open_session(JOINER)
    first.close()
    again = engine.open_session(JOINER)  # no tick in between: a quick reconnect is not told 'busy'
    assert engine.active_sessions == 1
    with pytest.raises(EngineFullError):  # ... and the freed slot is promised once only
        engine.open_session(TALKER)
    engine.tick()
    assert first.ended_reason == "closed"
    tick_until_ready(engine, again)
    assert again.ended_reason is None


def test_a_join_embeds_its_prompt_in_the_tick_thread_and_costs_the_talker_no_frame(make_engine, monkeypatch):
    """Ticks run in a worker thread, as under Engine.run(); the joiner opens its session on the event loop.

    Measured in ticks: the talking session receives exactly one frame per tick, across the tick in
    which the other joins and every tick of its prefill. And the join's device work (the prompt's
    embeddings) runs in the tick thread, never on the event loop that carries the sessions' audio.
    """
    engine = make_engine(max_sessions=2, prefill_frames_per_tick=8)  # a prefill over several ticks
    embedding_threads = []
    embed = prompt_plan.input_embeddings

    def recording_embed(*args, **kwargs):
        embedding_threads.append(threading.get_ident())
        return embed(*args, **kwargs)

    monkeypatch.setattr(prompt_plan, "input_embeddings", recording_embed)

    async def scenario():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as worker:
            tick_thread = await loop.run_in_executor(worker, threading.get_ident)

            async def tick():
                await loop.run_in_executor(worker, engine.tick)

            talker = engine.open_session(TALKER)
            while not talker.ready:
                await tick()
            drain(talker)
            embedding_threads.clear()
            joiner = engine.open_session(JOINER)  # on the event loop
            frames_per_tick = []
            while not joiner.ready:
                await tick()
                frames_per_tick.append(drain(talker))
            return tick_thread, frames_per_tick

    tick_thread, frames_per_tick = asyncio.run(scenario())
    assert len(frames_per_tick) > 2  # the join spanned several ticks
    assert frames_per_tick == [1] * len(frames_per_tick)
    assert embedding_threads and set(embedding_threads) == {tick_thread}
