"""Sessions on the demo model: batching, joins and leaves, prompts, slow readers, endings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_helpers import run_alone, user_audio

from plexray.errors import PlexrayError
from plexray.model import load_model
from plexray.model.inputs import input_embeddings, transformer_inputs
from plexray.model.voice_prefill import make_voice_prefill, read_voice_prefill, write_voice_prefill
from plexray.model.prompt import FRAME_SAMPLES, SILENCE_FRAMES, build_prompt_frames, wrap_system_prompt
from plexray.serve.engine import Engine, EngineConfig, EngineFullError, SessionSettings, SessionSettingsError

PROMPTS = [
    SessionSettings(text_prompt="You are a friendly teacher.", voice="NATF0", text_seed=1, audio_seed=2),
    SessionSettings(text_prompt="You sell insurance.", voice="VARM0", text_seed=3, audio_seed=4,
                    text_temperature=1.0, audio_topk=40, repetition_penalty=1.3, repetition_penalty_context=8),
    SessionSettings(text_prompt="", voice=None, text_seed=5, audio_seed=6, pad_mult=0.5),
]
TICKS = 24
# Tokens are a pure function of a session's seeds and inputs for a given engine capacity (batch
# shape): who else is in the batch, and when, does not matter. Engines of different capacity run
# differently blocked kernels, whose float rounding can flip near-tied Mimi codes.
CAPACITY = 4


def _tokens(outputs):
    return [output.text_token for output in outputs]


@pytest.fixture(scope="module")
def single_runs(engine_bundle):
    results = []
    for index, settings in enumerate(PROMPTS):
        with Engine(engine_bundle, EngineConfig(max_sessions=CAPACITY)) as engine:
            session = engine.open_session(settings)
            results.append(run_alone(engine, session, user_audio(index, TICKS), TICKS))
    return results


def test_batched_sessions_equal_single_runs(make_engine, single_runs):
    engine = make_engine(max_sessions=CAPACITY)
    sessions = [engine.open_session(settings) for settings in PROMPTS]
    audio = [user_audio(index, TICKS) for index in range(len(PROMPTS))]
    outputs = [[] for _ in PROMPTS]
    for tick in range(TICKS):
        for session, samples in zip(sessions, audio):
            session.push_pcm(samples[tick * FRAME_SAMPLES:(tick + 1) * FRAME_SAMPLES])
        engine.tick()
        for session, collected in zip(sessions, outputs):
            while (output := session.poll_output()) is not None:
                collected.append(output)
    assert len(outputs[0]) == len(single_runs[0])  # first come, first prefilled: no later start
    for alone, batched in zip(single_runs, outputs):
        # later joiners share the prefill budget, so they may start a tick or two later: compare prefixes
        assert 0 < len(batched) <= len(alone)
        assert _tokens(batched) == _tokens(alone)[:len(batched)]
        np.testing.assert_allclose(np.stack([o.pcm for o in batched]),
                                   np.stack([o.pcm for o in alone[:len(batched)]]), atol=1e-4)
    # different seeds and prompts really give different conversations
    assert _tokens(outputs[0]) != _tokens(outputs[1])


def test_join_and_leave_mid_stream_do_not_disturb_others(make_engine, single_runs):
    """Session 0 talks throughout; 1 joins at tick 5 (its prefill spans ticks) and leaves at 15; 2 joins at 9."""
    engine = make_engine(max_sessions=CAPACITY)
    joins = {0: 0, 1: 5, 2: 9}
    sessions: dict[int, object] = {}
    outputs = {index: [] for index in joins}
    audio = {index: user_audio(index, TICKS) for index in joins}
    for tick in range(TICKS):
        for index, at in joins.items():
            if tick == at:
                sessions[index] = engine.open_session(PROMPTS[index])
        if tick == 15:
            sessions[1].close()
        for index, session in sessions.items():
            start = (tick - joins[index]) * FRAME_SAMPLES
            session.push_pcm(audio[index][start:start + FRAME_SAMPLES])
        talking = sessions[0].ready
        frames_before = sessions[0].stats.frames_out
        engine.tick()
        if talking:  # one frame per tick, whatever the others do
            assert sessions[0].stats.frames_out == frames_before + 1, f"session 0 stalled at tick {tick}"
        for index, session in sessions.items():
            while (output := session.poll_output()) is not None:
                outputs[index].append(output)
    assert sessions[1].ended_reason == "closed"
    assert _tokens(outputs[0]) == _tokens(single_runs[0])
    np.testing.assert_allclose(np.stack([o.pcm for o in outputs[0]]), np.stack([o.pcm for o in single_runs[0]]),
                               atol=1e-4)
    for index in (1, 2):  # the joiners' conversations are their single runs, cut short
        assert 0 < len(outputs[index]) < len(single_runs[index])
        assert _tokens(outputs[index]) == _tokens(single_runs[index])[:len(outputs[index])]


def test_prompt_phase_layout_in_the_token_streams(make_engine, engine_bundle):
    engine = make_engine(max_sessions=1)
    plan = engine._planner.plan("You like trains.", "NATF0")
    frames, codes = plan.frames, plan.frames.codes
    prompt_ids = engine_bundle.tokenizer.encode(wrap_system_prompt("You like trains."))
    codes_pc = engine_bundle.prompt_codes
    assert plan.voice_source == "pt" and frames.voice_frames > 0
    text = codes[0].tolist()
    assert text[:frames.text_start] == [3] * frames.text_start  # voice + silence: padding
    assert text[frames.text_start:frames.text_start + len(prompt_ids)] == prompt_ids
    assert text[frames.text_start + len(prompt_ids):] == [3] * SILENCE_FRAMES
    silence = torch.tensor(codes_pc.silence)[:, None]
    assert torch.equal(codes[1:9, frames.voice_frames:], silence.expand(-1, codes.shape[1] - frames.voice_frames))
    assert torch.equal(codes[9:], torch.tensor(codes_pc.sine)[:, None].expand(-1, codes.shape[1]))
    # after the .pt's saved inputs, the positions read the codes (the model never sees frame 0)
    with torch.no_grad():
        from_codes = input_embeddings(engine_bundle.lm, transformer_inputs(engine_bundle.lm, codes[None, :, 1:]))[0]
    voice_positions = frames.voice_frames - 1
    torch.testing.assert_close(plan.embeddings[voice_positions:], from_codes[voice_positions:])
    assert plan.num_frames == frames.voice_frames + 2 * SILENCE_FRAMES + len(prompt_ids) - 1


def test_voice_prefill_round_trip_holds_the_voice_frames(engine_bundle, tmp_path):
    """A written .pt reads back; its inputs are those of voice frames 1..V-1 and its ring holds the last two."""
    lm = engine_bundle.lm
    voice_codes = torch.randint(0, lm.card, (8, 20), generator=torch.Generator().manual_seed(3))
    write_voice_prefill(tmp_path / "V.pt", make_voice_prefill(lm, voice_codes, engine_bundle.prompt_codes))
    prefill = read_voice_prefill(tmp_path / "V.pt", lm)
    frames = build_prompt_frames(voice_codes, [5, 6, 7], engine_bundle.prompt_codes)
    with torch.no_grad():
        expected = input_embeddings(lm, transformer_inputs(lm, frames.model_codes[None]))[0, :19]
    torch.testing.assert_close(prefill.embeddings, expected)
    assert prefill.num_voice_frames == 20
    assert torch.equal(prefill.last_frames(lm.delays), frames.codes[:, 18:20])


def test_prompt_changes_the_conversation(make_engine):
    outputs = []
    for prompt in ("You are a pirate.", "You are a banker who loves numbers."):
        engine = make_engine(max_sessions=1)
        session = engine.open_session(SessionSettings(text_prompt=prompt, voice="NATM0", text_seed=7, audio_seed=7))
        outputs.append(_tokens(run_alone(engine, session, user_audio(0, 16), 16)))
        engine.close()
    assert outputs[0] != outputs[1]


def test_slow_reader_loses_oldest_frames_and_does_not_slow_others(make_engine, single_runs):
    engine = make_engine(max_sessions=CAPACITY, output_buffer_frames=4)
    reader = engine.open_session(PROMPTS[0])
    sleeper = engine.open_session(PROMPTS[1])
    collected = []
    for tick in range(TICKS):
        reader.push_pcm(user_audio(0, TICKS)[tick * FRAME_SAMPLES:(tick + 1) * FRAME_SAMPLES])
        engine.tick()
        while (output := reader.poll_output()) is not None:
            collected.append(output)
    assert _tokens(collected) == _tokens(single_runs[0])
    assert reader.stats.frames_dropped == 0
    produced = sleeper.stats.frames_out
    assert produced > 4 and sleeper.stats.frames_dropped == produced - 4
    kept = []
    while (output := sleeper.poll_output()) is not None:
        kept.append(output)
    assert len(kept) == 4
    assert engine.metrics()["frames_dropped"] == produced - 4


def test_engine_full_and_bad_settings(make_engine):
    engine = make_engine(max_sessions=2)
    first = engine.open_session()
    engine.open_session()
    with pytest.raises(EngineFullError, match="all 2 session slots"):
        engine.open_session()
    assert engine.metrics()["sessions_refused"] == 1
    first.close()
    engine.tick()  # frees the closed slot
    assert first.ended_reason == "closed"
    with pytest.raises(SessionSettingsError, match="unknown voice 'NOPE'"):
        engine.open_session(SessionSettings(voice="NOPE"))
    assert engine.open_session() is not None
    with pytest.raises(PlexrayError, match="already driven by another Engine"):
        make_engine(max_sessions=1)
    engine.close()
    with pytest.raises(SessionSettingsError, match="prompt too long"):
        make_engine(max_sessions=1, max_prompt_frames=20).open_session(SessionSettings(voice="NATF0"))


def test_max_duration_and_idle_timeout(make_engine):
    engine = make_engine(max_sessions=2, max_session_s=0.8, idle_timeout_s=0.4)
    short = engine.open_session(SessionSettings())
    idle = engine.open_session(SessionSettings())
    for tick in range(30):
        short.push_pcm(np.zeros(FRAME_SAMPLES, np.float32))
        engine.tick()
    assert short.ended_reason == "max_duration" and short.stats.frames_out == 10
    assert idle.ended_reason == "idle_timeout"
    assert engine.metrics()["sessions_ended"] == {"max_duration": 1, "idle_timeout": 1}


def test_a_session_ended_by_the_engine_has_freed_its_slot_when_its_caller_hears_of_the_end(make_engine):
    """The end wakes the caller, which tells its client at once; a client that calls again must find the slot free."""
    engine = make_engine(max_sessions=1, max_session_s=0.08)  # ends after its first live frame
    session = engine.open_session(SessionSettings())
    held_when_ended = []
    end = session._end

    def end_and_look(reason: str) -> None:
        end(reason)
        held_when_ended.append(engine.active_sessions)  # what the woken caller's next caller would find

    session._end = end_and_look
    for _ in range(30):
        engine.tick()
    assert session.ended_reason == "max_duration" and held_when_ended == [0]


def test_moshi_family_has_no_prompt_phase(make_engine, moshi_bundle):
    engine = make_engine(bundle=moshi_bundle, max_sessions=2)
    session = engine.open_session(SessionSettings(text_prompt="ignored by Moshi", text_seed=2))
    engine.tick()  # no prefill: the first step runs in the first tick
    assert session.ready and session.stats.prefill_frames == 0
    outputs = run_alone(engine, session, user_audio(1, 6), 6)
    assert len(outputs) == 6 and all(np.isfinite(o.pcm).all() for o in outputs)
