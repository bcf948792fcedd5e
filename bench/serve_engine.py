"""Benchmark the serving engine: tick time against the number of sessions, on one model.

    .venv/bin/python bench/serve_engine.py                 # demo model, CPU (B = 1, 2, 4, 8, 16, then more)
    .venv/bin/python bench/serve_engine.py --full --cuda-graphs   # 7B PersonaPlex architecture, random weights, GPU

Prints one JSON object (also written to --out). The baseline is B = 1 measured in the same run, interleaved with
the other fixed sizes (each on its own copy of the model) so machine load hits them alike; every engine measured
for tick time has exactly B slots, all taken (an engine's batch is its slot count, taken or not):
`per_session_cost_ratio_b8` = (tick time at B = 8 / 8) / (tick time at B = 1); target <= 0.4.
`max_realtime_sessions`: the largest B measured whose tick p99 stays under 80 ms (doubling from 16,
then bisecting to within 1/8).
`join`: what one joining session's prefill costs the sessions already talking (tick time while it
prefills against the steady tick time, on its own engine of B + 1 slots, B talking, measured after the rest).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from plexray.model.compile import set_torch_compile
from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine import Engine, EngineConfig, SessionSettings

REALTIME_MS = 80.0
PROMPT = SessionSettings(text_prompt="You are a helpful assistant who answers questions about the weather.")


def demo_bundle():
    from plexray.model import ensure_demo_checkpoint, load_model

    directory = Path(os.environ.get("PLEXRAY_DEMO_DIR", Path.home() / ".cache/plexray/demo-checkpoint"))
    return load_model(str(ensure_demo_checkpoint(directory)))


def full_bundle(device: str):
    """The 7B PersonaPlex architecture and the real Mimi architecture, randomly initialised (no download)."""
    import sentencepiece
    from moshi.models import loaders

    from plexray.model import architectures
    from plexray.model.architectures import build_lm
    from plexray.model.loader import ModelBundle
    from plexray.model.prompt import derive_prompt_codes

    demo = demo_bundle()  # only for its tokenizer (the prompt's token ids are all < 32000)
    lm_kwargs = architectures.full_lm_kwargs("personaplex")
    with torch.device(device):
        lm = build_lm(lm_kwargs, device=device, dtype=torch.bfloat16).eval()
    mimi = loaders.get_mimi(None, architectures.full_mimi_config(), device=device,
                            num_codebooks=architectures.NUM_AUDIO_CODEBOOKS).eval()
    tokenizer: sentencepiece.SentencePieceProcessor = demo.tokenizer
    return ModelBundle(family="personaplex", lm=lm, mimi=mimi, tokenizer=tokenizer, voices={},
                       prompt_codes=derive_prompt_codes(mimi), lm_kwargs=lm_kwargs,
                       mimi_config=architectures.full_mimi_config(), files=demo.files)


class Load:
    """One engine with `sessions` live sessions, every output read; `spare_slot` adds a free slot for a joiner;
    `adapters`: session i runs on LoRA adapter adapters[i % len(adapters)] (bench/serve_adapters.py)."""

    def __init__(self, bundle, sessions: int, config: dict, spare_slot: bool = False,
                 adapters: list[str | None] | None = None):
        self.sessions = sessions
        self.engine = Engine(bundle, EngineConfig(max_sessions=sessions + spare_slot, **config))
        adapters = adapters or [None]
        self.live = [self.engine.open_session(PROMPT.model_copy(update={"text_seed": i, "audio_seed": i,
                                                                        "adapter": adapters[i % len(adapters)]}))
                     for i in range(sessions)]
        self.readers = list(self.live)
        rng = np.random.default_rng(sessions)
        self.speech = (0.1 * rng.standard_normal((sessions, FRAME_SAMPLES))).astype(np.float32)
        self.steady: list[float] = []
        while not all(session.ready for session in self.live):
            self.tick()
        for _ in range(5):  # warm-up (allocator, CUDA graph capture)
            self.tick()

    def tick(self) -> float:
        for session, frame in zip(self.live, self.speech):
            session.push_pcm(frame)
        started = time.perf_counter()
        self.engine.tick()
        elapsed = (time.perf_counter() - started) * 1000
        for session in self.readers:
            while session.poll_output() is not None:
                pass
        return elapsed

    def join(self) -> dict:
        """What one joining session's prefill costs the others, against steady ticks measured just before."""
        before = [self.tick() for _ in range(5)]
        joiner = self.engine.open_session(PROMPT)
        self.readers.append(joiner)
        during = []
        while not joiner.ready:
            during.append(self.tick())
        return {"prompt_frames": joiner.stats.prefill_frames, "prefill_ticks": len(during),
                "tick_ms_max_while_prefilling": round(max(during), 3),
                "extra_ms_per_prefill_tick": round(float(np.mean(during) - np.median(before)), 3)}

    def result(self) -> dict:
        steady = np.array(self.steady)
        return {
            "sessions": self.sessions,
            "slots": self.engine.capacity,
            "tick_ms_p50": round(float(np.percentile(steady, 50)), 3),
            "tick_ms_p99": round(float(np.percentile(steady, 99)), 3),
            "per_session_ms": round(float(np.percentile(steady, 50)) / self.sessions, 3),
            "realtime": bool(np.percentile(steady, 99) < REALTIME_MS),
            "frames_dropped": self.engine.metrics()["frames_dropped"],
        }


def measure_interleaved(bundles: dict, ticks: int, rounds: int, config: dict) -> dict[int, dict]:
    """Measure several batch sizes in interleaved rounds, so load on a shared machine hits them alike."""
    loads = {sessions: Load(bundle, sessions, config) for sessions, bundle in bundles.items()}
    try:
        for _ in tqdm(range(rounds), desc="interleaved rounds", file=sys.stderr):
            for load in loads.values():
                load.steady.extend(load.tick() for _ in range(max(1, ticks // rounds)))
        return {sessions: load.result() for sessions, load in loads.items()}
    finally:
        for load in loads.values():
            load.engine.close()


def measure_join(bundles: dict, config: dict) -> dict[int, dict]:
    """A joiner's cost at each size, each on its own engine: B talking sessions and one spare slot."""
    joins = {}
    for sessions, bundle in bundles.items():
        load = Load(bundle, sessions, config, spare_slot=True)
        try:
            joins[sessions] = load.join()
        finally:
            load.engine.close()
    return joins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="7B PersonaPlex architecture, random weights (GPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ticks", type=int, default=60, help="measured ticks per batch size")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over the fixed sizes")
    parser.add_argument("--sizes", default="1,2,4,8,16", help="batch sizes always measured")
    parser.add_argument("--max-sessions", type=int, default=128, help="stop the real-time search here")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--torch-compile", action="store_true")
    parser.add_argument("--prefill-frames-per-tick", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/serve_engine.json"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.full and args.device == "cpu":
        parser.error("--full needs a GPU (--device cuda)")

    bundle = full_bundle(args.device) if args.full else demo_bundle()
    set_torch_compile(args.torch_compile)  # model.compile's switch, applied after loading (which sets it off)
    config = {"cuda_graphs": args.cuda_graphs, "prefill_frames_per_tick": args.prefill_frames_per_tick}
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.full:  # one 7B copy at a time
        results = {}
        for sessions in tqdm(sizes, desc="batch sizes", file=sys.stderr):
            results.update(measure_interleaved({sessions: bundle}, args.ticks, 1, config))
    else:  # the fixed sizes side by side, each on its own copy of the small model
        copies = {sessions: dataclasses.replace(bundle, lm=copy.deepcopy(bundle.lm), mimi=copy.deepcopy(bundle.mimi))
                  for sessions in sizes}
        results = measure_interleaved(copies, args.ticks, args.rounds, config)
    for sessions, join in measure_join({sessions: bundle for sessions in sizes}, config).items():
        results[sessions]["join"] = join
    # beyond the fixed sizes: double while the tick p99 stays real time
    sessions = sizes[-1]
    while results[sessions]["realtime"] and sessions * 2 <= args.max_sessions:
        sessions *= 2
        print(f"searching: {sessions} sessions", file=sys.stderr)
        results.update(measure_interleaved({sessions: bundle}, args.ticks, 1, config))
    # then bisect between the largest real-time size and the smallest one that is not (to within 1/8)
    while True:
        fits = [b for b, r in results.items() if r["realtime"]]
        misses = [b for b, r in results.items() if not r["realtime"] and b > max(fits, default=0)]
        if not fits or not misses or min(misses) - max(fits) <= max(1, max(fits) // 8):
            break
        sessions = (max(fits) + min(misses)) // 2
        print(f"searching: {sessions} sessions", file=sys.stderr)
        results.update(measure_interleaved({sessions: bundle}, args.ticks, 1, config))
    results = dict(sorted(results.items()))
    realtime = [b for b, r in results.items() if r["realtime"]]
    summary = {
        "model": "personaplex-7b architecture (random weights)" if args.full else f"demo {bundle.family}",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)",
        "dtype": str(next(bundle.lm.parameters()).dtype),
        "config": config, "measured_ticks": args.ticks,
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on this machine during the run
        "by_sessions": list(results.values()),
        "baseline": "B = 1 (an engine of 1 slot) in this run, interleaved with the other fixed sizes",
        "per_session_cost_ratio_b8": (round(results[8]["per_session_ms"] / results[1]["per_session_ms"], 3)
                                      if 8 in results and 1 in results else None),
        "per_session_cost_target": 0.4,
        "max_realtime_sessions": max(realtime) if realtime else 0,
        "max_realtime_sessions_is_lower_bound": bool(realtime) and results[max(results)]["realtime"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
