"""Benchmark behavioural evaluation: the engine in evaluation mode as a multiple of real time, and
conversations scored per minute over Ray workers.

    .venv/bin/python bench/evaluate_behaviour.py                       # demo model, CPU
    .venv/bin/python bench/evaluate_behaviour.py --per-task 1          # a short smoke run

Prints one JSON object (also written to --out). Baselines in the same run: B = 1 for the engine
(`speedup_b8` = real-time multiple at B = 8 / at B = 1), one Ray worker for the fan-out
(`speedup_2_workers` = conversations per minute with 2 workers / with 1). The engine figures are
audio seconds produced per wall second of `engine.tick()` loops (model loaded, prompts included); the Ray
figures are whole runs of `run_checkpoint` (actors start, load the model, run, transcribe and score).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from plexray.config import load_config
from plexray.evaluation.runner import EvalConversation, run_conversations
from plexray.evaluation.testset import TASKS, build_test_set, load_test_set, read_user_audio
from plexray.evaluation.workers import engine_config, run_checkpoint, session_settings
from plexray.model import ensure_demo_checkpoint, load_model
from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.engine import Engine
from plexray.settings import PlexrayConfig


def engine_speed(bundle, config: PlexrayConfig, conversations: list[tuple[dict, object]], batch: int) -> dict:
    config = config.model_copy(deep=True)
    config.evaluation.batch_size = batch
    runs = [EvalConversation(c["id"], session_settings(c, config), audio) for c, audio in conversations]
    started = time.perf_counter()
    tracks = list(run_conversations(lambda: Engine(bundle, engine_config(config)), runs))
    elapsed = time.perf_counter() - started
    audio_s = sum(track.audio.size for track in tracks if track.audio is not None) / SAMPLE_RATE
    return {"batch": batch, "conversations": len(tracks), "audio_s": round(audio_s, 2), "wall_s": round(elapsed, 2),
            "realtime_multiple": round(audio_s / elapsed, 2)}


def ray_throughput(config: PlexrayConfig, conversations: list[dict], test_dir: Path, workers: int) -> dict:
    config = config.model_copy(deep=True)
    config.evaluation.num_workers = workers
    records = []
    started = time.perf_counter()
    run_checkpoint(config, "demo", conversations, lambda c: read_user_audio(test_dir, c), records.append,
                   label=f"{workers} worker(s)")
    elapsed = time.perf_counter() - started
    scored = sum(record["error"] is None for record in records)
    return {"workers": workers, "scored": scored, "wall_s": round(elapsed, 2),
            "conversations_per_minute": round(60 * scored / elapsed, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-task", type=int, default=2, help="conversations per task (role: 6 x this)")
    parser.add_argument("--batch", type=int, default=4, help="B of the Ray runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    demo = Path(os.environ.get("PLEXRAY_DEMO_DIR", Path.home() / ".cache/plexray/demo-checkpoint"))
    os.environ["PLEXRAY_DEMO_DIR"] = str(ensure_demo_checkpoint(demo))  # Ray workers inherit it
    counts = {task: args.per_task * (6 if task == "role" else 1) for task in TASKS}
    config = load_config(PlexrayConfig, None, [f"evaluation.test_set.conversations={json.dumps(counts)}",
                                               f"evaluation.batch_size={args.batch}", "evaluation.greedy=true"])
    with tempfile.TemporaryDirectory() as tmp:
        test_dir = Path(tmp) / "test-set"
        build_test_set(config.evaluation.test_set, test_dir, config.evaluation.seed)
        conversations = load_test_set(test_dir)
        with_audio = [(c, read_user_audio(test_dir, c)) for c in conversations]
        bundle = load_model(os.environ["PLEXRAY_DEMO_DIR"])
        engine = [engine_speed(bundle, config, with_audio, batch) for batch in (1, 8)]
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        try:
            fan_out = [ray_throughput(config, conversations, test_dir, workers) for workers in (1, 2)]
        finally:
            ray.shutdown()
    result = {
        "model": "demo", "conversations": len(conversations), "cpus": os.cpu_count(),
        "engine": engine, "speedup_b8": round(engine[1]["realtime_multiple"] / engine[0]["realtime_multiple"], 2),
        "ray": fan_out,
        "speedup_2_workers": round(fan_out[1]["conversations_per_minute"] / fan_out[0]["conversations_per_minute"], 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
