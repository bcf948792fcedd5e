"""Helpers shared by the engine tests: deterministic user audio and session drivers."""

from __future__ import annotations

import numpy as np
import torch

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine.batched_lm import USER, Forced, TextBiases
from plexray.serve.engine.sampling import SamplingParams
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


def sampling_params(batch: int) -> "SamplingParams":
    """Temperature 0.8, top-k 50, seed = slot index: a batch whose free slots sample as usual."""
    return SamplingParams(torch.full((batch,), 0.8), torch.full((batch,), 50, dtype=torch.long),
                          torch.arange(batch, dtype=torch.long))


def step_teacher_forced(engine_lm, codes: torch.Tensor, position: int, slot: int,
                        sliding_prompt_frames: int | None = None):
    """Step a BatchedLM one position with slot `slot` replaying `codes` [17, T]; the other slots sample.

    The slot's user codes of column position - 1 go in, and its text and agent tokens are imposed:
    text and codebook 0 of column `position`, codebooks 1-7 of column position - 1.
    `sliding_prompt_frames` as BatchedLM.step takes it (None: re-rotate the whole pinned capacity).
    """
    batch = engine_lm.batch_size
    replaying = torch.zeros(batch, dtype=torch.bool)
    replaying[slot] = True
    user = torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.long)
    user[slot] = codes[USER, position - 1]
    engine_lm.set_user_codes(user, replaying)
    forced = Forced(torch.zeros(batch, dtype=torch.long), replaying,
                    torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.long),
                    torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.bool))
    forced.text[slot] = codes[0, position]
    forced.audio[slot, 0] = codes[1, position]
    forced.audio[slot, 1:] = codes[2:1 + NUM_AUDIO_CODEBOOKS, position - 1]
    forced.audio_mask[slot] = True
    biases = TextBiases(torch.full((batch, 4), -1, dtype=torch.long), torch.ones(batch), torch.zeros(batch))
    active = torch.ones(batch, dtype=torch.bool)
    return engine_lm.step(active, sampling_params(batch), sampling_params(batch), biases, forced, (50, 50),
                          sliding_prompt_frames)
