"""The engine in evaluation mode (ticks back to back, one user frame per tick) gives a real-time session's tokens."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from plexray.evaluation.runner import EvalConversation, run_conversations
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, EngineConfig, SessionSettings

GREEDY = dict(text_temperature=0, audio_temperature=0)
PROMPTS = [("You enjoy having a good conversation.", "NATF0"), ("You are a wise and friendly teacher.", "VARM0"),
           ("You sell coffee.", "NATM0"), ("", None)]
# Ample buffers: the real-time reader or writer may lag a tick behind on a busy machine; nothing may be dropped.
BUFFERS = dict(input_buffer_frames=100, output_buffer_frames=100)


@pytest.fixture(scope="module")
def bundle(demo_checkpoint):
    from plexray.model import load_model

    return load_model(str(demo_checkpoint))  # an own copy: engines put the model in streaming mode


def _conversations(count: int) -> list[EvalConversation]:
    """Different prompts, voices and lengths (12, 15, 18, 21 frames; the last frame of each is partial)."""
    conversations = []
    for index in range(count):
        samples = (12 + 3 * index) * FRAME_SAMPLES - 500
        audio = (0.1 * np.random.default_rng(index).standard_normal(samples)).astype(np.float32)
        text_prompt, voice = PROMPTS[index]
        conversations.append(EvalConversation(f"c{index}", SessionSettings(text_prompt=text_prompt, voice=voice,
                                                                           **GREEDY), audio))
    return conversations


async def _real_time(bundle, conversations: list[EvalConversation], batch: int) -> dict[str, list[int]]:
    """Served sessions: the engine's 80 ms loop, each caller's audio pushed at once, outputs awaited."""
    engine = Engine(bundle, EngineConfig(max_sessions=batch, **BUFFERS))
    loop = asyncio.create_task(engine.run())
    try:
        async def converse(conversation: EvalConversation) -> list[int]:
            session = engine.open_session(conversation.settings)
            frames = -(-conversation.user_audio.size // FRAME_SAMPLES)
            # Pushed before the prompt is done: the first tick after it takes frame 0, as in evaluation mode.
            padding = frames * FRAME_SAMPLES - conversation.user_audio.size
            session.push_pcm(np.pad(conversation.user_audio, (0, padding)))
            return [(await session.next_output()).text_token for _ in range(frames)]

        tokens = await asyncio.gather(*(converse(conversation) for conversation in conversations))
    finally:
        engine.stop()
        await loop
        engine.close()
    return {conversation.id: collected for conversation, collected in zip(conversations, tokens)}


@pytest.mark.parametrize("batch", [1, 4])
def test_evaluation_mode_gives_the_real_time_tokens(bundle, batch):
    conversations = _conversations(batch)
    tracks = {track.id: track for track in run_conversations(
        lambda: Engine(bundle, EngineConfig(max_sessions=batch, **BUFFERS)), conversations)}
    expected = asyncio.run(_real_time(bundle, conversations, batch))
    for conversation in conversations:
        track = tracks[conversation.id]
        assert track.error is None
        assert track.audio.shape == conversation.user_audio.shape  # aligned with the user track
        assert track.text_tokens == expected[conversation.id]
    assert len({tuple(track.text_tokens) for track in tracks.values()}) == batch  # really different conversations


def test_conversations_wait_for_free_slots_and_refusals_are_reported(bundle):
    """Five conversations through two slots (joining as others end), one with a voice the checkpoint lacks."""
    refused = EvalConversation("bad", SessionSettings(voice="NOPE"), np.zeros(FRAME_SAMPLES, np.float32))
    conversations = _conversations(4) + [refused]
    tracks = {track.id: track for track in run_conversations(lambda: Engine(bundle, EngineConfig(max_sessions=2)),
                                                             conversations)}
    assert "unknown voice 'NOPE'" in tracks["bad"].error and tracks["bad"].audio is None
    alone = {track.id: track for track in run_conversations(lambda: Engine(bundle, EngineConfig(max_sessions=2)),
                                                            conversations[3:4])}
    assert tracks["c3"].text_tokens == alone["c3"].text_tokens  # whoever shared its batch
    assert all(tracks[c.id].audio.shape == c.user_audio.shape for c in conversations[:4])
