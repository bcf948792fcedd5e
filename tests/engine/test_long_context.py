"""Calls longer than the LM context: the prompt pinned, the conversation sliding, positions re-based.

The reference is computed directly, not with the engine's code: moshi's transformer run
non-streaming over [prompt] + [the last C - P frames] at positions 0..C-1, the attention layout
and the distances that the pinned cache must reproduce. With one layer a frame's key depends only
on its own input, so that reference is exact for the streaming engine too (with more layers each
cached key also carries the context it was computed in, which no fresh window can reproduce).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_helpers import GREEDY, step_teacher_forced, user_audio
from plexray.model import architectures, load_model
from plexray.model.inputs import input_embeddings, transformer_inputs
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, EngineConfig, SessionSettings
from plexray.serve.engine.batched_lm import BatchedLM
from plexray.serve.engine.long_context import PinnedPromptKVCache, rotate
from replica import GOLDEN_DIR

CONTEXT = 48
LONG_CALL_CONTEXT, LONG_CALL_FRAMES = 100, 1250
PROMPT = 12
FRAMES = PROMPT + 100  # two windows past the context


def _window_reference(lm, embeddings: torch.Tensor, position: int) -> torch.Tensor:
    """Text logits at `position` from a fresh forward over [prompt] + [last C - P positions]."""
    if position < CONTEXT:
        kept = torch.arange(position + 1)
    else:
        kept = torch.cat([torch.arange(PROMPT), torch.arange(position - (CONTEXT - PROMPT) + 1, position + 1)])
    out = lm.transformer(embeddings[kept][None])  # positions 0..len-1, causal
    return lm.text_linear(lm.out_norm(out))[0, -1].float()


def test_rotate_inverts_and_matches_moshis_rope():
    from moshi.modules.rope import apply_rope

    from plexray.model.compile import set_torch_compile, torch_compile_enabled

    x = torch.randn(2, 3, 5, 16)
    positions = torch.tensor([[7.0, 8, 9, 10, 11], [100.0, 101, 102, 103, 104]])
    compiled = torch_compile_enabled()
    set_torch_compile(False)  # moshi's eager formula (compiled, its rounding differs in the last bit)
    try:
        expected, _ = apply_rope(x, x, torch.tensor([7, 100]), 10000, interleave=True)
    finally:
        set_torch_compile(compiled)
    torch.testing.assert_close(rotate(x, positions, 10000, True), expected, rtol=0, atol=0)
    torch.testing.assert_close(rotate(rotate(x, positions, 10000, True), -positions, 10000, True), x)


@pytest.mark.parametrize("rerotation", ["whole_capacity", "as_the_engine_asks"])
def test_teacher_forced_logits_equal_the_window_reference(rerotation):
    """Slot 1 replays codes two windows past the context while slots 0 and 2 generate beside it.

    The engine asks for the re-rotation of the longest sliding prompt only (none before the context is
    full); CUDA graphs re-rotate the whole pinned capacity at every step. Both must give the reference."""
    torch.manual_seed(0)
    lm = architectures.build_lm(architectures.demo_lm_kwargs("personaplex", text_card=512)
                                | dict(num_layers=1, context=CONTEXT), device="cpu").eval()
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(0, lm.card, (lm.num_codebooks, FRAMES), generator=generator)
    codes[0] = torch.randint(0, lm.text_card, (FRAMES,), generator=generator)
    with torch.no_grad():
        embeddings = input_embeddings(lm, transformer_inputs(lm, codes[None]))[0]  # [FRAMES, dim]
        references = {position: _window_reference(lm, embeddings, position) for position in range(PROMPT, FRAMES)}

    batch, slot = 3, 1
    engine_lm = BatchedLM(lm, batch, prompt_capacity=16)
    try:
        engine_lm.reset_slot(slot)
        with torch.no_grad():
            engine_lm.prefill(slot, embeddings[:PROMPT])
        engine_lm.write_columns(slot, codes[:, PROMPT - 2:PROMPT], PROMPT - 2)
        engine_lm.pin_prompt(slot, PROMPT)
        for position in range(PROMPT, FRAMES):
            asked = (PROMPT if position >= CONTEXT else 0) if rerotation == "as_the_engine_asks" else None
            out = step_teacher_forced(engine_lm, codes, position, slot, asked)
            torch.testing.assert_close(out.text_logits[slot], references[position], rtol=1e-4, atol=1e-4,
                                       msg=lambda m: f"position {position}: {m}")
    finally:
        engine_lm.close()


def _talk(engine, session, audio: np.ndarray, frames: int) -> list:
    outputs = []
    for index in range(frames):
        session.push_pcm(audio[index * FRAME_SAMPLES:(index + 1) * FRAME_SAMPLES])
        engine.tick()
        outputs.append(session.poll_output())
    return outputs


@pytest.fixture(scope="module")
def toy_bundle():
    """The smallest real-architecture checkpoint (tests/golden), with a short context so a call slides often."""
    return load_model(str(GOLDEN_DIR), context=LONG_CALL_CONTEXT)


def test_a_long_call_ends_only_by_the_client_and_does_not_disturb_others(toy_bundle, one_thread):
    """A call of 12 context windows (1250 frames at a context of 100) beside a session that joins late.

    The late session's tokens are the same whether its neighbour is 12 windows in (sliding) or
    just started; the long call ends only when its client closes it, and no state grew. (Real
    ages, 1 to 30 minutes at the real context, are run by bench/long_calls.py.)
    """
    # Text prompts only: the toy checkpoint's voice sample (16 s, past Mimi's 10 s window for the NVIDIA
    # goldens) is longer than this test's 100-frame context.
    long_settings = SessionSettings(text_prompt="You are patient.", voice=None, **GREEDY)
    late_settings = SessionSettings(text_prompt="You sell tea.", voice=None, text_seed=3, audio_seed=4)
    late_audio = user_audio(seed=5, frames=40)

    with Engine(toy_bundle, EngineConfig(max_sessions=2, max_session_s=3600, idle_timeout_s=3600)) as engine:
        long_call = engine.open_session(long_settings)
        while not long_call.ready:
            engine.tick()
        caches = [layer.self_attn._streaming_state.kv_cache for layer in toy_bundle.lm.transformer.layers]
        storage = [(cache.cache.data_ptr(), tuple(cache.cache.shape)) for cache in caches]
        quiet = np.zeros(FRAME_SAMPLES, np.float32)
        for _ in range(LONG_CALL_FRAMES):
            long_call.push_pcm(quiet)
            engine.tick()
            long_call.poll_output()
        assert long_call.ended_reason is None and long_call.stats.frames_out == LONG_CALL_FRAMES
        assert all(isinstance(cache, PinnedPromptKVCache) for cache in caches)
        assert [(c.cache.data_ptr(), tuple(c.cache.shape)) for c in caches] == storage  # constant memory
        late = engine.open_session(late_settings)
        while not late.ready:
            long_call.push_pcm(quiet)
            engine.tick()
        beside_old = _talk(engine, late, late_audio, 40)
        long_call.close()
        engine.tick()
        assert long_call.ended_reason == "closed"

    with Engine(toy_bundle, EngineConfig(max_sessions=2)) as engine:
        young = engine.open_session(long_settings)
        late = engine.open_session(late_settings)
        while not late.ready:
            young.push_pcm(np.zeros(FRAME_SAMPLES, np.float32))
            engine.tick()
        beside_young = _talk(engine, late, late_audio, 40)
    assert [o.text_token for o in beside_old] == [o.text_token for o in beside_young]
    assert [o.audio_codes for o in beside_old] == [o.audio_codes for o in beside_young]
