"""Benchmark many LoRA adapters in one batched engine against one merged model (issue 26).

    .venv/bin/python bench/serve_adapters.py            # demo model, CPU

Prints one JSON object (also written to --out). Every engine has B = 8 slots, all talking, each on its
own copy of the model, measured in interleaved rounds so machine load hits them alike:
  merged        the base with one adapter folded in (`plexray merge`): the baseline, no adapter tables
  base_tables   the adapter engine, every session on the bare base (row 0): the tables' own cost
  adapters_N    the adapter engine, sessions on N distinct adapters (N = 1, 4, 8)
`tick_ratio_8_adapters` = tick p50 of adapters_8 / tick p50 of merged; target <= 1.15 on CPU.
`adapter_load`: reading one adapter (loader thread: files, checks) and copying it into a device row
(tick thread), and the adapter's size. `realtime_sessions`: the largest B (doubling from 8) whose tick
p99 stays under 80 ms, with no adapter engine and with 8 distinct adapters.
Adapters are real peft files (plexray's LoRA wrapping, default rank 16 attention-gating) with random
nonzero B matrices: their values do not change the cost.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from serve_engine import REALTIME_MS, Load, demo_bundle
from tqdm import tqdm

from plexray.serve.engine.config import AdapterServingConfig
from plexray.train import checkpoint, lora
from plexray.train.config import LoraConfig

BATCH = 8


def write_adapters(bundle, root: Path, count: int, rank: int) -> list[str]:
    """`count` adapters a0... in the registry `root` (peft's files, as plexray train writes them)."""
    names = []
    for index in range(count):
        model = lora.apply_lora(copy.deepcopy(bundle.lm), LoraConfig(rank=rank, alpha=2.0 * rank), seed=index)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=0.02)
        lora.save_adapter(model, root / f"a{index}")
        names.append(f"a{index}")
    return names


def own_copy(bundle, lm=None):
    """The bundle with its own LM (and Mimi): an engine wraps its LM's linears and puts both in streaming mode."""
    return dataclasses.replace(bundle, lm=lm if lm is not None else copy.deepcopy(bundle.lm),
                               mimi=copy.deepcopy(bundle.mimi))


def measure(variants: dict[str, tuple], ticks: int, rounds: int) -> dict[str, dict]:
    """variants: name -> (bundle, engine config, adapters per session); interleaved rounds of ticks."""
    loads = {}
    try:
        for name, (bundle, config, adapters) in variants.items():
            loads[name] = Load(bundle, BATCH, config, adapters=adapters)
        for _ in tqdm(range(rounds), desc="interleaved rounds", file=sys.stderr):
            for load in loads.values():
                load.steady.extend(load.tick() for _ in range(max(1, ticks // rounds)))
        results = {}
        for name, load in loads.items():
            results[name] = load.result()
            adapters = load.engine.metrics().get("adapters")
            if adapters is not None:
                results[name]["adapters_on_device"] = len(adapters["on_device"])
        return results
    finally:
        for load in loads.values():
            load.engine.close()


def realtime_sessions(bundle, config: dict, adapters: list[str | None], ticks: int, limit: int) -> int:
    """The largest B, doubling from 8, whose tick p99 stays under 80 ms (0 if B = 8 does not)."""
    best, sessions = 0, BATCH
    while sessions <= limit:
        load = Load(bundle, sessions, config, adapters=adapters)
        try:
            load.steady.extend(load.tick() for _ in range(ticks))
            if np.percentile(load.steady, 99) >= REALTIME_MS:
                break
        finally:
            load.engine.close()
        best, sessions = sessions, sessions * 2
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=60, help="measured ticks per variant")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds over the variants")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--realtime-limit", type=int, default=64, help="stop the real-time search here (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench/serve_adapters.json"))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = demo_bundle()
    with tempfile.TemporaryDirectory(prefix="plexray-adapters-") as registry:
        names = write_adapters(bundle, Path(registry), BATCH, args.rank)
        merged_lm = checkpoint.merged_weights(copy.deepcopy(bundle.lm), Path(registry) / names[0])
        adapter_config = {"adapters": AdapterServingConfig(registry=registry, max_on_device=BATCH, max_rank=args.rank)}
        variants = {"merged": (own_copy(bundle, merged_lm), {}, None),
                    "base_tables": (own_copy(bundle), adapter_config, None)}
        for count in (1, 4, 8):
            variants[f"adapters_{count}"] = (own_copy(bundle), adapter_config, names[:count])
        results = measure(variants, args.ticks, args.rounds)
        load = adapter_load(bundle, adapter_config, names)
        realtime = {}
        if args.realtime_limit:
            realtime = {"none": realtime_sessions(bundle, {}, [None], args.ticks, args.realtime_limit),
                        "8_adapters": realtime_sessions(bundle, adapter_config, names, args.ticks,
                                                        args.realtime_limit)}
    merged_ms = results["merged"]["tick_ms_p50"]
    summary = {
        "model": f"demo {bundle.family}", "device": f"cpu ({os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(), "rank": args.rank, "sessions": BATCH,
        "measured_ticks": args.ticks, "load_average_1m": round(os.getloadavg()[0], 2),
        "baseline": "merged: B = 8 on the base with one adapter folded in, interleaved in this run",
        "variants": results,
        "tick_ratio": {name: round(r["tick_ms_p50"] / merged_ms, 3) for name, r in results.items()},
        "tick_ratio_8_adapters": round(results["adapters_8"]["tick_ms_p50"] / merged_ms, 3),
        "tick_ratio_target": 1.15,
        "adapter_load": load,
        "realtime_sessions": realtime,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def adapter_load(bundle, adapter_config: dict, names: list[str]) -> dict:
    """Read each adapter (loader thread) and copy it into a device row (tick thread), on a fresh engine."""
    from serve_engine import Engine, EngineConfig, PROMPT

    with Engine(own_copy(bundle), EngineConfig(max_sessions=1, **adapter_config)) as engine:
        for name in names:
            engine.prepare_adapter(name).result()
            session = engine.open_session(PROMPT.model_copy(update={"adapter": name}))
            engine.tick()  # seats it: the copy into a device row
            session.close()
            engine.tick()
        pool = engine.metrics()["adapters"]
    return {"host_read_ms_p50": pool["host_load_ms_p50"], "device_copy_ms_p50": pool["device_load_ms_p50"],
            "adapters_read": pool["host_loads"], "bytes_per_adapter": pool["host_bytes"] // len(pool["in_host"])}


if __name__ == "__main__":
    sys.exit(main())
