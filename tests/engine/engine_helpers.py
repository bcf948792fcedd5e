"""Helpers shared by the engine tests: deterministic user audio and a single-session driver."""

from __future__ import annotations

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES


def user_audio(seed: int, frames: int) -> np.ndarray:
    """Deterministic speech-like test signal: [frames * 1920] float32 (noise bursts shaped by a slow envelope)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * FRAME_SAMPLES) / 24000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t + seed)
    return (0.2 * envelope * rng.standard_normal(t.size)).astype(np.float32)


def run_alone(engine, session, audio: np.ndarray, ticks: int) -> list:
    """Push one frame per tick and tick; return the session's outputs."""
    outputs = []
    for tick in range(ticks):
        frame = audio[tick * FRAME_SAMPLES:(tick + 1) * FRAME_SAMPLES]
        if frame.size:
            session.push_pcm(frame)
        engine.tick()
        while (output := session.poll_output()) is not None:
            outputs.append(output)
    return outputs
