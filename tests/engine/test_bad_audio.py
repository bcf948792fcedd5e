"""Bad audio from a client is repaired or refused, counted, and never stops the engine."""

from __future__ import annotations

import numpy as np
import pytest

from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import BadAudioError, SessionSettings


def test_bad_audio_is_repaired_or_refused_and_counted(make_engine):
    engine = make_engine(max_sessions=2, input_buffer_frames=5)
    session = engine.open_session(SessionSettings())
    neighbour = engine.open_session(SessionSettings())
    for _ in range(2):
        engine.tick()
    assert session.ready
    while session.poll_output() is not None:
        pass

    nan_frame = np.full(FRAME_SAMPLES, np.nan, np.float32)
    nan_frame[::2] = 0.1
    session.push_pcm(nan_frame)
    session.push_pcm(np.full(FRAME_SAMPLES, 5.0, np.float32))  # clipped
    session.push_pcm((np.ones(FRAME_SAMPLES) * 8000).astype(np.int16))  # integer PCM scaled
    # 160 ms at 16 kHz -> one frame and part of the next (the resampling filter's delay is held back)
    session.push_pcm(np.zeros((1, 2560), np.float32), sample_rate=16000)
    audio = session.stats.audio
    assert (audio.repaired, audio.nonfinite_samples, audio.clipped_samples, audio.resampled) == (
        4, FRAME_SAMPLES // 2, FRAME_SAMPLES, 1)

    for bad, rate, message in [
        (np.zeros((2, FRAME_SAMPLES), np.float32), 24000, "mono"),
        (np.array(["a", "b"]), 24000, "must be numbers"),
        (np.zeros(FRAME_SAMPLES, np.float32), 0, "sample rate"),
        (np.zeros(FRAME_SAMPLES, np.complex64), 24000, "must be numbers"),
    ]:
        with pytest.raises(BadAudioError, match=message):
            session.push_pcm(bad, sample_rate=rate)
    assert audio.refused == 4

    outputs = []
    for _ in range(5):
        engine.tick()
        while (output := session.poll_output()) is not None:
            outputs.append(output)
    assert len(outputs) == 5 and all(np.isfinite(o.pcm).all() and o.pcm.shape == (FRAME_SAMPLES,) for o in outputs)
    assert session.stats.input_frames == 4 and session.stats.input_underruns >= 1
    assert neighbour.stats.frames_out == session.stats.frames_out
    metrics = engine.metrics()
    assert metrics["audio_refused"] == 4 and metrics["audio_repaired"] == 4


def test_odd_lengths_are_buffered_and_a_runaway_client_is_trimmed(make_engine):
    engine = make_engine(max_sessions=1, input_buffer_frames=3)
    session = engine.open_session(SessionSettings())
    engine.tick()
    session.push_pcm(np.zeros(1000, np.float32))
    engine.tick()  # 1000 samples: not a frame yet, silence is used
    assert session.stats.input_frames == 0 and session.stats.input_underruns == 1
    session.push_pcm(np.zeros(920, np.float32))
    session.push_pcm(np.zeros(0, np.float32))
    engine.tick()
    assert session.stats.input_frames == 1
    session.push_pcm(np.zeros(10 * FRAME_SAMPLES, np.float32))  # far ahead of real time
    assert session.stats.input_dropped_samples == 7 * FRAME_SAMPLES
    for _ in range(4):
        engine.tick()
    assert session.stats.input_frames == 4 and session.ended_reason is None


@pytest.mark.parametrize("rate, chunk", [(48000, 960), (16000, 123)])
def test_a_direct_caller_pushing_chunks_hears_the_whole_stream_resampled(make_engine, rate, chunk):
    """push_pcm keeps one resampler per session: audio pushed in small chunks at another rate reaches
    the engine as the same samples as the whole clip resampled at once (no clicks at the chunk edges)."""
    engine = make_engine(max_sessions=2, input_buffer_frames=40)
    chunked, whole = engine.open_session(SessionSettings()), engine.open_session(SessionSettings())
    seconds = np.arange(rate) / rate
    speech_like = (0.4 * np.sin(2 * np.pi * 440 * seconds) + 0.1 * np.sin(2 * np.pi * 1300 * seconds)).astype(np.float32)
    for start in range(0, speech_like.size, chunk):
        chunked.push_pcm(speech_like[start:start + chunk], sample_rate=rate)
    whole.push_pcm(speech_like, sample_rate=rate)
    heard_chunked, heard_whole = _queued_frames(chunked), _queued_frames(whole)
    assert len(heard_chunked) == len(heard_whole) >= 11  # 1 s at 24 kHz is 12.5 frames, less the filter's delay
    np.testing.assert_allclose(np.concatenate(heard_chunked), np.concatenate(heard_whole), atol=1e-3)


def _queued_frames(session) -> list[np.ndarray]:
    """The full user frames a session holds for the engine, taken as the engine's tick takes them."""
    frames = []
    while (frame := session._take_input_frame()[0]) is not None:
        frames.append(frame)
    return frames
