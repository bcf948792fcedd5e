"""LoRA adapters per session in one batched engine (issue 26): parity with the merged model, loading
off the tick, eviction, bad adapters. Adapters are trained here: two optimizer steps of plexray's own
training step on the demo model, saved by plexray's own adapter writer (peft's files)."""

from __future__ import annotations

import json
import re
import shutil
import threading

import numpy as np
import pytest
import torch
from engine_helpers import GREEDY, user_audio

from plexray.model import load_model
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, EngineConfig, SessionSettings, SessionSettingsError
from plexray.serve.engine import adapters as adapter_pool
from plexray.serve.engine.config import AdapterServingConfig

TICKS = 14  # the 'Be brief.' prompt prefills in a few ticks, then about 10 live frames
PROMPT = dict(text_prompt="Be brief.", **GREEDY)


def _train_adapter(checkpoint, directory, rank: int, seed: int, target_modules: str = "attention-gating"):
    """Two optimizer steps of LoRA training on random codes, saved as plexray train saves an adapter."""
    from plexray.train import lora
    from plexray.train.config import LoraConfig, OptimConfig
    from plexray.train.data import Batch
    from plexray.train.loop import LossSetup, train_step
    from plexray.train.loss import PRESETS
    from plexray.train.optim import build_optimizer

    lm = load_model(str(checkpoint)).lm
    model = lora.apply_lora(lm, LoraConfig(rank=rank, alpha=2.0 * rank, target_modules=target_modules), seed=seed)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=2e-2, warmup_steps=0), total_steps=2)
    setup = LossSetup(PRESETS["personaplex"], list(lm.delays), lm.dep_q)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(2):
        codes = torch.randint(0, 500, (2, 17, 16), generator=generator)
        batch = Batch(codes=codes, loss_frames=torch.ones(2, 16, dtype=torch.bool), real_frames=32)
        train_step(model, optimizer, scheduler, [batch], setup, torch.device("cpu"), grad_clip=1.0)
    lora.save_adapter(model, directory)
    return directory


@pytest.fixture(scope="module")
def registry(demo_checkpoint, tmp_path_factory):
    """Adapters x (rank 4) and y (rank 8, other data) in a registry directory."""
    root = tmp_path_factory.mktemp("adapters")
    _train_adapter(demo_checkpoint, root / "x", rank=4, seed=1)
    _train_adapter(demo_checkpoint, root / "y", rank=8, seed=2)
    return root


@pytest.fixture(scope="module")
def merged_x(demo_checkpoint, registry, tmp_path_factory):
    """The demo model with x folded in, written and loaded as `plexray merge` does."""
    from plexray.model.config import ModelConfig
    from plexray.train.merge import merge_checkpoint

    directory = merge_checkpoint(ModelConfig(checkpoint=str(demo_checkpoint)), registry / "x",
                                 tmp_path_factory.mktemp("merged") / "x")
    return load_model(str(directory))


def _adapter_config(registry, **values) -> AdapterServingConfig:
    return AdapterServingConfig(registry=str(registry), **values)


def _run(engine: Engine, settings: list[SessionSettings], audio_seeds: list[int] | None = None,
         ticks: int = TICKS) -> list[list[list[int]]]:
    """Open every session at once, push each its user audio, tick; -> [text + 8 codes] per frame per session."""
    sessions = [engine.open_session(s) for s in settings]
    audio = [user_audio(seed, ticks) for seed in (audio_seeds or range(len(settings)))]
    frames = [[] for _ in settings]
    for tick in range(ticks):
        for session, samples in zip(sessions, audio):
            session.push_pcm(samples[tick * FRAME_SAMPLES:(tick + 1) * FRAME_SAMPLES])
        engine.tick()
        for session, collected in zip(sessions, frames):
            while (output := session.poll_output()) is not None:
                collected.append([output.text_token, *output.audio_codes])
    return frames


@pytest.mark.parametrize("capacity", [1, 4])
def test_each_slot_runs_its_own_adapter_as_the_merged_model_would(engine_bundle, merged_x, registry,
                                                                  capacity, one_thread):
    """x among y and the bare base gives x's merged model's tokens; the base slot the base model's."""
    x, y, base = (SessionSettings(adapter=name, **PROMPT) for name in ("x", "y", None))
    with Engine(merged_x, EngineConfig(max_sessions=capacity)) as engine:
        alone_merged = _run(engine, [SessionSettings(**PROMPT)])[0]
    with Engine(engine_bundle, EngineConfig(max_sessions=capacity)) as engine:
        alone_base = _run(engine, [base])[0]
    assert alone_merged != alone_base  # the adapter does change the conversation

    with Engine(engine_bundle, EngineConfig(max_sessions=capacity, adapters=_adapter_config(registry))) as engine:
        for name in ("x", "y"):  # read before the first tick: the sessions are seated at once
            engine.prepare_adapter(name).result()
        frames = _run(engine, [x, y, base, x][:capacity], audio_seeds=[0] * capacity)  # the same user audio
    assert frames[0] == alone_merged
    if capacity > 1:
        # the last to join shares the prefill budget and may start a tick or two later: a prefix
        assert 0 < len(frames[2]) and frames[2] == alone_base[:len(frames[2])]
        assert 0 < len(frames[3]) and frames[3] == alone_merged[:len(frames[3])]
        assert frames[1] != alone_base[:len(frames[1])] and frames[1] != alone_merged[:len(frames[1])]  # y: a third
    # text and all 8 agent codebooks (temporal transformer and depformer adapters) on every frame
    assert len(frames[0]) >= 5 and all(len(frame) == 9 for frame in frames[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs are a CUDA feature")
def test_adapters_under_cuda_graphs(demo_checkpoint, merged_x, registry):
    """The graphed step reads the slots' rows from the same buffer it captured: x among y and the base, graphed,
    gives what it gives eagerly, and what x's merged model gives."""
    bundle = load_model(str(demo_checkpoint), device="cuda")
    merged = load_model(str(merged_x.files.source), device="cuda")
    settings = [SessionSettings(adapter=name, **PROMPT) for name in ("x", "y", None, "x")]
    runs = {}
    for graphs in (False, True):
        config = EngineConfig(max_sessions=4, cuda_graphs=graphs, adapters=_adapter_config(registry))
        with Engine(bundle, config) as engine:
            for name in ("x", "y"):
                engine.prepare_adapter(name).result()
            runs[graphs] = _run(engine, settings, audio_seeds=[0] * 4)
    assert runs[True] == runs[False]
    with Engine(merged, EngineConfig(max_sessions=4)) as engine:
        alone_merged = _run(engine, [SessionSettings(**PROMPT)])[0]
    assert runs[True][0] == alone_merged


def _tick(engine: Engine, sessions: list, frames: dict) -> None:
    """One tick with a frame of user audio for every session; count each session's frames out."""
    for session in sessions:
        session.push_pcm(np.full(FRAME_SAMPLES, 0.01, np.float32))
    engine.tick()
    for session in sessions:
        while session.poll_output() is not None:
            frames[session.id] = frames.get(session.id, 0) + 1


def _live(engine: Engine, settings: SessionSettings, others: list, frames: dict):
    session = engine.open_session(settings)
    while not session.ready:
        _tick(engine, [session, *others], frames)
    return session


def test_a_session_waiting_for_its_adapter_does_not_delay_the_others(engine_bundle, registry, monkeypatch):
    """While x is read (held back here on the loader thread) the talking session gets a frame every tick, a
    later joiner without adapter is seated ahead of x, and x's session starts once x is read."""
    gate = threading.Event()
    real_read = adapter_pool.read_adapter

    def held_read(*args, **kwargs):
        assert gate.wait(timeout=60), "the test never released the read"
        return real_read(*args, **kwargs)

    monkeypatch.setattr(adapter_pool, "read_adapter", held_read)
    config = EngineConfig(max_sessions=3, adapters=_adapter_config(registry))
    with Engine(engine_bundle, config) as engine:
        frames = {}
        talking = _live(engine, SessionSettings(**PROMPT), [], frames)
        waiting = engine.open_session(SessionSettings(adapter="x", **PROMPT))
        later = engine.open_session(SessionSettings(**PROMPT))
        for tick in range(8):
            before = frames.get(talking.id, 0)
            _tick(engine, [talking, waiting, later], frames)
            assert frames[talking.id] == before + 1  # not one tick without its frame
        assert later.ready and not waiting.ready and waiting.ended_reason is None
        assert engine.metrics()["adapters"]["loading"] == ["x"]
        gate.set()
        engine.prepare_adapter("x").result(timeout=60)  # the read in flight
        while not waiting.ready:
            before = frames.get(talking.id, 0)
            _tick(engine, [talking, waiting, later], frames)
            assert frames[talking.id] == before + 1  # the tick that copies x into its row included
        metrics = engine.metrics()["adapters"]
        assert metrics["on_device"] == ["x"] and metrics["device_loads"] == 1 and metrics["in_use"] == {"x": 1}


def test_eviction_never_removes_an_adapter_in_use(engine_bundle, registry):
    """One device row: y waits while x talks, then takes x's row; host memory keeps both while both are needed."""
    config = EngineConfig(max_sessions=2, adapters=_adapter_config(registry, max_on_device=1, max_in_host=1))
    with Engine(engine_bundle, config) as engine:
        frames = {}
        on_x = _live(engine, SessionSettings(adapter="x", **PROMPT), [], frames)
        on_y = engine.open_session(SessionSettings(adapter="y", **PROMPT))
        engine.prepare_adapter("y").result(timeout=60)
        for _ in range(5):
            _tick(engine, [on_x, on_y], frames)
        metrics = engine.metrics()["adapters"]
        assert not on_y.ready and on_y.ended_reason is None
        assert metrics["on_device"] == ["x"] and metrics["device_evictions"] == 0
        assert sorted(metrics["in_host"]) == ["x", "y"]  # over max_in_host: both are needed
        on_x.close()
        while not on_y.ready:
            _tick(engine, [on_y], frames)
        metrics = engine.metrics()["adapters"]
        assert metrics["on_device"] == ["y"] and metrics["device_evictions"] == 1 and metrics["in_use"] == {"y": 1}
        # a new session on x must now wait for y's session: still in use
        again = engine.open_session(SessionSettings(adapter="x", **PROMPT))
        for _ in range(3):
            _tick(engine, [on_y, again], frames)
        assert not again.ready and engine.metrics()["adapters"]["on_device"] == ["y"]


def _bad_registry(registry, root):
    """Copies of x, each broken one way."""
    from safetensors.torch import load_file, save_file

    for name in ("truncated", "not_json", "embeddings", "other_base", "too_wide"):
        shutil.copytree(registry / "x", root / name)
    weights = (root / "truncated" / "adapter_model.safetensors")
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    (root / "not_json" / "adapter_config.json").write_text("{r: 4")
    config = json.loads((registry / "x" / "adapter_config.json").read_text())
    (root / "embeddings" / "adapter_config.json").write_text(json.dumps(config | {"modules_to_save": ["text_emb"]}))
    (root / "too_wide" / "adapter_config.json").write_text(json.dumps(config | {"r": 4096}))
    state = load_file(str(registry / "x" / "adapter_model.safetensors"))
    key = next(k for k in state if "transformer.layers.0.self_attn.in_projs.0.lora_A" in k)
    state[key] = torch.zeros(4, 256)  # a base of another width
    save_file(state, str(root / "other_base" / "adapter_model.safetensors"))
    shutil.copytree(registry / "x", root / "x")
    return root


BAD = {"truncated": "not a readable safetensors file", "not_json": "unreadable",
       "embeddings": "modules_to_save .* merge it into its base", "other_base": r"lora_A \[4, 256\]",
       "too_wide": "rank 4096 exceeds this engine's max_rank 64"}


def test_bad_adapters_are_refused_with_their_reason_and_the_engine_keeps_serving(engine_bundle, registry, tmp_path):
    from plexray.serve.engine.adapter_files import AdapterFileError

    root = _bad_registry(registry, tmp_path)
    with Engine(engine_bundle, EngineConfig(max_sessions=2, adapters=_adapter_config(root))) as engine:
        frames = {}
        talking = _live(engine, SessionSettings(adapter="x", **PROMPT), [], frames)
        for name in ("nobody", "../x", ""):
            with pytest.raises(SessionSettingsError, match="unknown adapter|adapter name"):
                engine.open_session(SessionSettings(adapter=name, **PROMPT))
        for name, reason in BAD.items():
            with pytest.raises(AdapterFileError, match=reason):
                engine.prepare_adapter(name).result(timeout=60)
            session = engine.open_session(SessionSettings(adapter=name, **PROMPT))
            while session.ended_reason is None:  # its read fails on the loader thread; then it leaves the line
                before = frames.get(talking.id, 0)
                _tick(engine, [talking, session], frames)
                assert frames[talking.id] == before + 1
            assert session.ended_reason == "adapter_failed" and not session.ready
            assert name in session.ended_detail and re.search(reason, session.ended_detail)
        metrics = engine.metrics()["adapters"]
        assert metrics["on_device"] == ["x"] and metrics["load_failures"] == 2 * len(BAD)
        assert engine.active_sessions == 1 and talking.ended_reason is None
    with Engine(engine_bundle, EngineConfig(max_sessions=1)) as engine:
        with pytest.raises(SessionSettingsError, match="serves no adapters"):
            engine.open_session(SessionSettings(adapter="x", **PROMPT))


def test_an_adapter_rewritten_in_the_registry_is_served_to_new_sessions(engine_bundle, registry, tmp_path):
    """Hot deploy: a training job writes a new version of x (here y's weights under x's name); the session
    already on x keeps its weights, a new session gets the new ones, without restarting anything."""
    root = tmp_path / "registry"
    shutil.copytree(registry / "x", root / "x")
    settings = SessionSettings(adapter="x", **PROMPT)
    with Engine(engine_bundle, EngineConfig(max_sessions=2, adapters=_adapter_config(root))) as engine:
        frames = {}
        old = _live(engine, settings, [], frames)
        shutil.rmtree(root / "x")
        shutil.copytree(registry / "y", root / "x")  # a new version (copytree keeps y's times; its sizes differ)
        new = _live(engine, settings, [old], frames)
        assert new.ready and old.ended_reason is None
        metrics = engine.metrics()["adapters"]
        assert metrics["on_device"] == ["x", "x"] and metrics["in_use"] == {"x": 2} and metrics["host_loads"] == 2
