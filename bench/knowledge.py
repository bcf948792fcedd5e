"""Benchmark knowledge bases: index throughput, retrieval latency, and what the passages cost in prefill.

    flock /tmp/plexray-heavy.lock .venv/bin/python bench/knowledge.py            # default: ~1-2 min on 2 cores
    .venv/bin/python bench/knowledge.py --documents 2000 --chunks 1000 100000 1000000

Prints one JSON object (also written to --out):
- `index`: documents/s of `plexray knowledge index` (Ray Data read + hash + chunk, then SQLite FTS5)
  with 1 and with 2 Ray workers, alternated (1, 2, 1, 2) on fresh bases so machine load hits both alike;
  `speedup_2_vs_1` is the ratio of the medians.
- `retrieval`: p50/p99 of one lexical search (top 3) and of search + fitting to a 160-token budget,
  at each number of passages, over synthetic passages with a Zipf vocabulary.
- `prefill`: the handshake time of one session on the demo model (CPU) with the persona's prompt alone
  and with a full budget of passages, and the time per prompt frame: what the retrieval costs
  beside what the passages cost.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plexray.knowledge import lexical
from plexray.knowledge.chunking import Chunk
from plexray.knowledge.config import KnowledgeConfig
from plexray.knowledge.prompt import fit_passages, prompt_with_passages
from plexray.knowledge.words import FUNCTION_WORDS

ROLE = "You are the barista of Harbor Lane Coffee. Answer in one or two sentences."
BUDGET_TOKENS = 160


def vocabulary(size: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def sentences(words: list[str], weights: np.ndarray, count: int, rng: np.random.Generator) -> list[str]:
    picked = rng.choice(len(words), size=(count, 12), p=weights)
    return [" ".join(words[i] for i in row).capitalize() + "." for row in picked]


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3)


def bench_index(count: int, root: Path, words, weights, rng) -> dict:
    from plexray.knowledge.indexer import index_documents

    docs = root / "docs"
    docs.mkdir()
    for index in range(count):
        body = "\n\n".join(" ".join(sentences(words, weights, 5, rng)) for _ in range(6))
        (docs / f"doc{index:05d}.md").write_text(f"# Topic {index}\n\n{body}\n")
    config = KnowledgeConfig(root=str(root / "bases"))
    index_documents([str(docs / "doc00000.md")], "warmup", config, workers=1)  # Ray's start, not measured
    rates: dict[int, list[float]] = {1: [], 2: []}
    for run, workers in enumerate((1, 2, 1, 2)):
        started = time.perf_counter()
        summary = index_documents([str(docs)], f"run{run}", config, workers=workers)
        rates[workers].append(count / (time.perf_counter() - started))
        passages = summary["passages"]
    medians = {workers: statistics.median(values) for workers, values in rates.items()}
    return {"documents": count, "passages": passages, "docs_per_s_1_worker": round(medians[1], 1),
            "docs_per_s_2_workers": round(medians[2], 1), "speedup_2_vs_1": round(medians[2] / medians[1], 2),
            "runs": {str(k): [round(v, 1) for v in values] for k, values in rates.items()}}


def bench_retrieval(sizes: list[int], root: Path, words, weights, rng, count_tokens, queries: int) -> dict:
    results = {}
    for size in sizes:
        path = root / f"passages-{size}.sqlite"
        connection = lexical.connect(path)
        started = time.perf_counter()
        for start in range(0, size, 10_000):
            batch = range(start, min(size, start + 10_000))
            chunks = [Chunk(f"d{i // 10}:{i % 10}", f"doc{i // 10}", i % 10, "",
                            " ".join(sentences(words, weights, 5, rng))) for i in batch]
            lexical.replace_documents(connection, [], chunks)
        build_s = time.perf_counter() - started
        connection.close()
        index = lexical.LexicalIndex(path)
        asked = [" ".join(words[i] for i in rng.choice(len(words), size=6, p=weights)) for _ in range(queries)]
        index.search(asked[0], 3)  # the page cache, not the first query's disk reads
        search_s, grounded_s = [], []
        for query in asked:
            started = time.perf_counter()
            hits = index.search(query, 3)
            search_s.append(time.perf_counter() - started)
            fit_passages([chunk.text for chunk, _ in hits], BUDGET_TOKENS, count_tokens)
            grounded_s.append(time.perf_counter() - started)
        results[str(size)] = {"build_s": round(build_s, 2), "search_p50_ms": percentile_ms(search_s, 50),
                              "search_p99_ms": percentile_ms(search_s, 99),
                              "search_and_fit_p50_ms": percentile_ms(grounded_s, 50),
                              "search_and_fit_p99_ms": percentile_ms(grounded_s, 99)}
    return results


def bench_prefill(bundle, words, weights, rng) -> dict:
    from plexray.serve.engine import Engine, EngineConfig, SessionSettings

    count_tokens = lambda text: len(bundle.tokenizer.encode(text))  # noqa: E731
    passages = fit_passages(sentences(words, weights, 30, rng), BUDGET_TOKENS, count_tokens).passages
    prompts = {"persona_only": ROLE, "with_passages": prompt_with_passages(ROLE, passages)}
    times = {name: [] for name in prompts}
    frames = {}
    for _ in range(3):
        for name, text in prompts.items():
            engine = Engine(bundle, EngineConfig(max_sessions=1))
            session = engine.open_session(SessionSettings(text_prompt=text, voice="NATF0"))
            started = time.perf_counter()
            while not session.ready:
                engine.tick()
            times[name].append(time.perf_counter() - started)
            frames[name] = engine._planner.layout(text, "NATF0").frames.num_frames
            engine.close()  # releases the model for the next engine
    median = {name: statistics.median(values) for name, values in times.items()}
    extra_frames = frames["with_passages"] - frames["persona_only"]
    per_frame_ms = (median["with_passages"] - median["persona_only"]) * 1000 / extra_frames
    # Served, the engine ticks every 80 ms and prefills at most prefill_frames_per_tick frames a tick, so
    # while a tick's compute fits in 80 ms the handshake waits for ticks, not for compute.
    per_tick = EngineConfig().prefill_frames_per_tick
    paced_ticks = {name: math.ceil(count / per_tick) for name, count in frames.items()}
    return {"device": "cpu", "model": "demo (personaplex architecture, small)",
            "paced_handshake_ms": {name: ticks * 80 for name, ticks in paced_ticks.items()},
            "budget_tokens": BUDGET_TOKENS, "passage_frames": extra_frames,
            "prompt_frames": frames, "handshake_ms": {k: round(v * 1000, 1) for k, v in median.items()},
            "ms_per_prompt_frame": round(per_frame_ms, 2),
            "budget_cost_ms": round(per_frame_ms * BUDGET_TOKENS, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=300, help="documents indexed per run")
    parser.add_argument("--chunks", type=int, nargs="+", default=[1000, 100_000], help="passage counts for retrieval")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/knowledge.json"))
    args = parser.parse_args()

    import ray

    from plexray.model import ensure_demo_checkpoint, load_model

    rng_py, rng = random.Random(0), np.random.default_rng(0)
    # Real text's most frequent words are function words; queries drop them (lexical.match_expression).
    words = sorted(FUNCTION_WORDS)[:100] + vocabulary(5000, rng_py)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    demo = Path(os.environ.get("PLEXRAY_DEMO_DIR", Path.home() / ".cache/plexray/demo-checkpoint"))
    bundle = load_model(str(ensure_demo_checkpoint(demo)))
    count_tokens = lambda text: len(bundle.tokenizer.encode(text))  # noqa: E731
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="bench-knowledge-") as temporary:
        root = Path(temporary)
        result = {
            "benchmark": "knowledge", "cpus": os.cpu_count(),
            "index": bench_index(args.documents, root, words, weights, rng),
            "retrieval": bench_retrieval(args.chunks, root, words, weights, rng, count_tokens, args.queries),
            "prefill": bench_prefill(bundle, words, weights, rng),
        }
    ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
