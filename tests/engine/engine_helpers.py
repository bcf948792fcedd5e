"""Helpers shared by the engine tests: deterministic user audio and session drivers."""

from __future__ import annotations

import numpy as np
import torch

from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, SessionSettings

GREEDY = dict(text_temperature=0, audio_temperature=0, text_topk=1, audio_topk=1, pad_mult=0)
GENERATED_FRAMES = 100


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


def run_session(engine: Engine, settings: SessionSettings, user_pcm: np.ndarray, neighbours: list[SessionSettings],
         user_codes: list[list[int]] | None = None):
    """Open the session (and its neighbours), tick until it is live, then feed 100 user frames
    (and, if given, impose `user_codes` as the session's Mimi codes of those frames).

    Returns (greedy text token of every prompt position, [text + 8 agent codes] per output frame).
    """
    lm = engine.bundle.lm
    session = engine.open_session(settings)
    others = [engine.open_session(other) for other in neighbours]
    slot = next(i for i, s in enumerate(engine._slots) if s is None)  # the first free slot: ours, admitted first
    prompt_outputs = []
    recording = False

    def capture(module, args, output):
        if recording:
            prompt_outputs.append(output[0])  # [T, dim] of one prefill chunk

    original_prefill = engine._lm.prefill

    def prefill(index, embeddings):
        nonlocal recording
        recording = index == slot
        try:
            original_prefill(index, embeddings)
        finally:
            recording = False

    engine._lm.prefill = prefill
    original_encode, frame_codes = engine._mimi.encode, None

    def encode(pcm, slots):
        codes = original_encode(pcm, slots)
        if frame_codes is not None and slots[slot]:
            codes[slot] = torch.tensor(frame_codes)
        return codes

    engine._mimi.encode = encode
    hook = lm.transformer.register_forward_hook(capture)
    try:
        while not session.ready:
            for other in others:
                other.push_pcm(np.zeros(FRAME_SAMPLES, np.float32))
            engine.tick()
        outputs = []
        for index in range(GENERATED_FRAMES):
            session.push_pcm(user_pcm[index * FRAME_SAMPLES:(index + 1) * FRAME_SAMPLES])
            frame_codes = user_codes[index] if user_codes is not None else None
            for other in others:
                other.push_pcm(np.full(FRAME_SAMPLES, 0.01 * index, np.float32))
            engine.tick()
            output = session.poll_output()
            outputs.append([output.text_token, *output.audio_codes])
    finally:
        hook.remove()
    if not prompt_outputs:  # a family without a prompt phase
        return [], outputs
    with torch.no_grad():
        prompt_logits = lm.text_linear(lm.out_norm(torch.cat(prompt_outputs)[None]))[0]
    return prompt_logits.argmax(-1).tolist(), outputs
