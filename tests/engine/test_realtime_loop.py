"""The real-time loop: asyncio callers, a worker-thread tick, and clean endings."""

from __future__ import annotations

import asyncio

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import SessionSettings


def test_run_serves_async_sessions_and_stops_cleanly(make_engine):
    engine = make_engine(max_sessions=2, cuda_graphs=True)  # a GPU-only switch: off on CPU

    async def conversation():
        runner = asyncio.create_task(engine.run())
        talker = engine.open_session(SessionSettings(voice="NATF0", text_prompt="Be brief."))
        waiting = engine.open_session(SessionSettings())
        assert await talker.wait_ready()
        outputs = []
        while len(outputs) < 6:
            talker.push_pcm(np.zeros(FRAME_SAMPLES, np.float32))
            output = await talker.next_output()
            assert output is not None
            outputs.append(output)
        talker.close()
        while await talker.next_output() is not None:  # drains what was produced, then None
            pass
        engine.stop()
        await runner
        return talker, waiting, outputs

    talker, waiting, outputs = asyncio.run(conversation())
    assert talker.ended_reason == "closed"
    assert waiting.ended_reason == "engine_stopped"
    assert all(o.pcm.shape == (FRAME_SAMPLES,) and o.pcm.dtype == np.float32 for o in outputs)
    metrics = engine.metrics()
    assert metrics["ticks"] > 6 and metrics["tick_ms_p99"] is not None
    assert metrics["sessions_ended"] == {"closed": 1, "engine_stopped": 1}
    assert metrics["cuda_graphs"] is False
