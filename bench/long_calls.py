"""Tick time and memory of a call as it ages past the LM context (pinned prompt, sliding conversation).

    .venv/bin/python bench/long_calls.py [--ages 0,1,4,10,30] [--window 200]

One engine on the demo checkpoint (real 3000-frame context) holds one call that runs from age 0
to the oldest age asked for, in real frames (30 minutes = 22,500 ticks: several minutes on a CPU).
At each age it times `--window` ticks and reads the process's resident memory; the JSON gives
each age's tick p50 / mean and RSS against age 0 of the same run (target: ratios within 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

FRAMES_PER_MINUTE = 60 * 12.5


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ages", default="0,1,4,10,30", help="call ages in minutes, comma-separated")
    parser.add_argument("--window", type=int, default=200, help="ticks timed at each age")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from plexray.model import ensure_demo_checkpoint, load_model
    from plexray.model.reference import default_demo_dir
    from plexray.serve.engine import Engine, EngineConfig, SessionSettings

    ages = sorted(float(age) for age in args.ages.split(","))
    bundle = load_model(str(ensure_demo_checkpoint(default_demo_dir())))
    quiet = np.zeros(1920, np.float32)
    results = []
    with Engine(bundle, EngineConfig(max_sessions=1, max_session_s=(ages[-1] + 5) * 60,
                                     idle_timeout_s=(ages[-1] + 5) * 60)) as engine:
        call = engine.open_session(SessionSettings(text_prompt="You are a patient support agent.", voice="NATF0"))
        while not call.ready:
            engine.tick()
        frames = 0

        def tick() -> None:
            nonlocal frames
            call.push_pcm(quiet)
            engine.tick()
            call.poll_output()
            frames += 1

        for age in ages:
            while frames < age * FRAMES_PER_MINUTE:
                tick()
            times = []
            for _ in range(args.window):
                started = time.perf_counter()
                tick()
                times.append((time.perf_counter() - started) * 1000)
            results.append({"age_min": age, "frames": frames, "tick_ms_p50": statistics.median(times),
                            "tick_ms_mean": statistics.fmean(times), "rss_mb": resident_mb()})
            print(json.dumps(results[-1]), flush=True)
        assert call.ended_reason is None, call.ended_reason

    base = results[0]
    for result in results:
        result["tick_p50_ratio"] = result["tick_ms_p50"] / base["tick_ms_p50"]
        result["rss_ratio"] = result["rss_mb"] / base["rss_mb"]
    context = bundle.lm.transformer.layers[0].self_attn.context
    print(json.dumps({"benchmark": "long_calls", "context_frames": context, "threads": args.threads,
                      "window_ticks": args.window, "ages": results,
                      "max_tick_p50_ratio": max(r["tick_p50_ratio"] for r in results),
                      "max_rss_ratio": max(r["rss_ratio"] for r in results), "target_ratio": 1.05}, indent=2))


if __name__ == "__main__":
    main()
