"""Helpers shared by the engine tests: deterministic user audio and session drivers."""

from __future__ import annotations

import dataclasses

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


@dataclasses.dataclass
class SessionTrace:
    """What one engine session computed: the prompt's text logits and every step after the prompt."""

    prompt_text_logits: torch.Tensor  # [P, text_card] at each prompt position (P = 0 without a prompt phase)
    text_logits: torch.Tensor  # [S, text_card] at each step after the prompt (the first one included)
    audio_logits: torch.Tensor  # [S, 8, card] the agent depformer's logits at those steps
    outputs: list[list[int]]  # [text + 8 agent codes] per output frame

    @property
    def prompt_tokens(self) -> list[int]:
        return self.prompt_text_logits.argmax(-1).tolist()


def run_session(engine: Engine, settings: SessionSettings, user_pcm: np.ndarray, neighbours: list[SessionSettings],
                user_codes: list[list[int]] | None = None, forced_path: list[list[int]] | None = None) -> SessionTrace:
    """Open the session (and its neighbours), tick until it is live, then feed 100 user frames.

    `user_codes`: imposed as the session's Mimi codes of those frames. `forced_path`: teacher forcing,
    the tokens [text, agent codebooks 0-7] the session takes at each step after the prompt instead of
    sampling them (a token the engine itself imposes, the prompt's last acoustic column at the first
    step, stays imposed), so that its logits can be compared along another generator's path.
    """
    lm = engine.bundle.lm
    session = engine.open_session(settings)
    others = [engine.open_session(other) for other in neighbours]
    slot = next(i for i, s in enumerate(engine._slots) if s is None)  # the first free slot: ours, admitted first
    prompt_outputs, text_logits, audio_logits = [], [], []
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

    original_step = engine._lm.step

    def step(active, text_params, audio_params, biases, forced, *args):
        ours = bool(active[slot])
        if ours and forced_path is not None:
            tokens = torch.tensor(forced_path[len(text_logits)])
            forced.text[slot], forced.text_mask[slot] = tokens[0], True
            free = ~forced.audio_mask[slot]
            forced.audio[slot] = torch.where(free, tokens[1:], forced.audio[slot])
            forced.audio_mask[slot] = True
        out = original_step(active, text_params, audio_params, biases, forced, *args)
        if ours:
            text_logits.append(out.text_logits[slot].clone())
            audio_logits.append(out.audio_logits[slot].clone())
        return out

    engine._lm.prefill, engine._lm.step = prefill, step
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
        del engine._lm.prefill, engine._lm.step, engine._mimi.encode  # the class's methods again
    with torch.no_grad():
        if prompt_outputs:
            prompt_text_logits = lm.text_linear(lm.out_norm(torch.cat(prompt_outputs)[None]))[0].float()
        else:  # a family without a prompt phase
            prompt_text_logits = torch.zeros(0, lm.text_card)
    return SessionTrace(prompt_text_logits, torch.stack(text_logits), torch.stack(audio_logits), outputs)


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
