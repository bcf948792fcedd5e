"""Lockstep benchmark: plexray's serving engine against moshi's own generator, on the same weights.

    .venv/bin/python bench/engine_vs_moshi.py                       # CPU, one thread, B = 1, 8, 16
    .venv/bin/python bench/engine_vs_moshi.py --device cuda --threads 8

Both sides run the moshi-family demo checkpoint (the architecture PyPI moshi's `LMGen` runs unchanged):

- plexray: `Engine.tick()` with B sessions, each given one 80 ms frame of audio per tick (Mimi encode, LM
  step, Mimi decode for all B slots, as served);
- moshi: one tick of moshi's own streaming loop at batch B: `MimiModel.encode`, `LMGen.step`,
  `MimiModel.decode`, audio back on the host (what moshi's server does per frame).

The two alternate tick by tick (which goes first alternates too), so machine load hits them alike.
Prints one JSON object: per B, each side's tick p50 and the paired ratio engine / moshi (median of the
per-tick ratios, and the ratio of the medians); target <= 0.9 at B = 1 and B = 8 on the CPU (issue 22).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from moshi.models.lm import LMGen

from plexray.model import ensure_demo_checkpoint, load_model
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, EngineConfig, SessionSettings


class EngineSide:
    """plexray's engine with B talking sessions."""

    name = "plexray"

    def __init__(self, bundle, batch: int):
        self.engine = Engine(bundle, EngineConfig(max_sessions=batch))
        self.sessions = [self.engine.open_session(SessionSettings(text_seed=i, audio_seed=i)) for i in range(batch)]
        while not all(session.ready for session in self.sessions):
            self.engine.tick()

    def tick(self, pcm: np.ndarray) -> None:
        for session, frame in zip(self.sessions, pcm):
            session.push_pcm(frame)
        self.engine.tick()
        for session in self.sessions:
            while session.poll_output() is not None:
                pass

    def close(self) -> None:
        self.engine.close()


class MoshiSide:
    """moshi's `LMGen` and streaming Mimi at batch B, sampling with moshi's defaults."""

    name = "moshi"

    def __init__(self, bundle, batch: int):
        self.mimi, self.generator = bundle.mimi, LMGen(bundle.lm)
        self._contexts = [self.mimi.streaming(batch), self.generator.streaming(batch)]
        for context in self._contexts:
            context.__enter__()

    @torch.no_grad()
    def tick(self, pcm: np.ndarray) -> None:
        codes = self.mimi.encode(torch.from_numpy(pcm)[:, None].to(self.device))  # [B, 8, 1]
        tokens = self.generator.step(codes)  # [B, 1 + 8, 1], None while the delays fill
        if tokens is not None:
            self.mimi.decode(tokens[:, 1:]).cpu().numpy()

    @property
    def device(self) -> torch.device:
        return next(self.mimi.parameters()).device

    def close(self) -> None:
        for context in reversed(self._contexts):
            context.__exit__(None, None, None)


def measure(sides: list, batch: int, ticks: int, warmup: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {side.name: [] for side in sides}
    for index in range(warmup + ticks):
        pcm = (0.1 * rng.standard_normal((batch, FRAME_SAMPLES))).astype(np.float32)
        for side in (sides if index % 2 == 0 else sides[::-1]):
            started = time.perf_counter()
            side.tick(pcm)
            if index >= warmup:
                times[side.name].append((time.perf_counter() - started) * 1000)
    engine, moshi = np.array(times["plexray"]), np.array(times["moshi"])
    return {"batch": batch, "ticks": ticks,
            "plexray_tick_ms_p50": round(float(np.median(engine)), 3),
            "moshi_tick_ms_p50": round(float(np.median(moshi)), 3),
            "ratio_paired_median": round(float(np.median(engine / moshi)), 3),
            "ratio_of_medians": round(float(np.median(engine) / np.median(moshi)), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--ticks", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="whole runs per batch size, fresh engines each")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    directory = Path(os.environ.get("PLEXRAY_MOSHI_DEMO_DIR", Path.home() / ".cache/plexray/demo-checkpoint-moshi"))
    checkpoint = str(ensure_demo_checkpoint(directory, family="moshi"))
    results = []
    for batch in args.batches:
        for round_index in range(args.rounds):
            # Each side its own copy of the weights: a model in streaming mode belongs to one loop.
            sides = [EngineSide(load_model(checkpoint, device=args.device), batch),
                     MoshiSide(load_model(checkpoint, device=args.device), batch)]
            try:
                results.append(measure(sides, batch, args.ticks, args.warmup, seed=round_index) | {"round": round_index})
            finally:
                for side in sides:
                    side.close()
            print(json.dumps(results[-1]), flush=True)
    summary = {"benchmark": "engine_vs_moshi", "device": args.device, "threads": args.threads,
               "torch": torch.__version__, "checkpoint": "moshi-family demo", "results": results,
               "target": "ratio <= 0.9 at B = 1 and B = 8 on the CPU"}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
