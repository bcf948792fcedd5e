"""Frame timestamps: each agent frame carries when the user frame its tick consumed became complete.

No timing is asserted: the pushes carry chosen `received_at` stamps (1.0, 2.0, ...) and each output
must carry the stamp of the push that supplied the last sample of the user frame of its tick (None
for a tick that heard silence). Pushes are sized so that stamping one frame early or late, or with
the push holding a frame's first sample, gives another stamp.
"""

from __future__ import annotations

import time

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.app.conversation import FrameLatency
from plexray.serve.engine import SessionOutput, SessionSettings

HALF = FRAME_SAMPLES // 2


def _samples(count: int) -> np.ndarray:
    return np.full(count, 0.01, np.float32)


def _tick_stamp(engine, session):
    """Tick once; the one agent frame it produced and the clock readings around the tick."""
    before = time.monotonic()
    engine.tick()
    after = time.monotonic()
    output = session.poll_output()
    assert output is not None and session.poll_output() is None  # one agent frame per tick
    assert before <= output.produced_at <= after
    return output.input_received_at


def test_each_output_carries_the_stamp_of_the_push_that_completed_its_frame(make_engine, one_thread):
    engine = make_engine(max_sessions=1, input_buffer_frames=3)
    session = engine.open_session(SessionSettings())
    while not session.ready:  # prefill; nothing pushed yet, so the first live tick has no frame
        engine.tick()

    session.push_pcm(_samples(HALF), received_at=1.0)  # half a frame: not a frame yet
    assert _tick_stamp(engine, session) is None  # underrun: silence, no stamp

    session.push_pcm(_samples(FRAME_SAMPLES), received_at=2.0)  # completes frame 1, half of it left over
    assert _tick_stamp(engine, session) == 2.0  # not 1.0: that push held the frame's first sample only

    session.push_pcm(_samples(FRAME_SAMPLES + HALF), received_at=3.0)  # completes frames 2 and 3
    session.push_pcm(_samples(FRAME_SAMPLES), received_at=4.0)  # exactly frame 4
    assert [_tick_stamp(engine, session) for _ in range(3)] == [3.0, 3.0, 4.0]
    assert _tick_stamp(engine, session) is None  # nothing buffered again
    assert session.stats.input_frames == 4 and session.stats.input_underruns == 2

    # A client far ahead: the buffer (3 frames) keeps the newest audio and drops the oldest half frame;
    # the frame boundaries move with the dropped samples, so the third frame ends in the 6.0 push.
    session.push_pcm(_samples(3 * FRAME_SAMPLES), received_at=5.0)
    session.push_pcm(_samples(HALF), received_at=6.0)
    assert session.stats.input_dropped_samples == HALF
    assert [_tick_stamp(engine, session) for _ in range(4)] == [5.0, 5.0, 6.0, None]


def test_without_a_stamp_the_push_time_is_used(make_engine, one_thread):
    engine = make_engine(max_sessions=1)
    session = engine.open_session(SessionSettings())
    while not session.ready:
        engine.tick()
    before = time.monotonic()
    session.push_pcm(_samples(FRAME_SAMPLES))
    after = time.monotonic()
    assert before <= _tick_stamp(engine, session) <= after


def _output(received_at: float | None, produced_at: float) -> SessionOutput:
    return SessionOutput(np.zeros(FRAME_SAMPLES, np.float32), "", 0, (0,) * 8, received_at, produced_at)


def test_frame_latency_splits_the_engine_share_from_the_ingress_share():
    recorder = FrameLatency(history=3)
    recorder.record(_output(None, 5.0), sent_at=5.5)  # a silence tick: nothing to time
    assert recorder.snapshot()["frame_latency_ms_p50"] is None and recorder.frames == 0
    for start in (10.0, 20.0, 30.0, 40.0):  # the first one falls out of the 3-frame history
        recorder.record(_output(start, start + 0.050), sent_at=start + 0.060)
    snapshot = recorder.snapshot()
    assert snapshot["latency_frames"] == 4 and len(recorder.full_ms) == 3
    assert abs(snapshot["frame_latency_ms_p50"] - 60.0) < 1e-6
    assert abs(snapshot["engine_share_ms_p99"] - 50.0) < 1e-6
    assert abs(snapshot["ingress_share_ms_p50"] - 10.0) < 1e-6
