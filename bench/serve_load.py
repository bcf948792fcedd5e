"""Load benchmark of the Serve app: N clients stream real Opus speech in real time over loopback.

Measures, in one run on the same machine:
  * ingress: frame round trip through Serve's proxy, the replica's WebSocket app and the engine:
    each user frame is sent at its real-time slot; its round trip ends when the next agent audio
    is decoded by the client (the engine answers every 80 ms tick, so this is transport + tick
    phase + Opus paging, the part the ingress can add to),
  * baseline: the same measurement against an Engine alone in this process (no Ray, no sockets),
  * ping: 0x06 round trips through the proxy and the replica's app while it streams (no engine),
  * admission: with the fleet full, extra callers must be refused (close 1013 + error message):
    how many were refused correctly and how long the refusal took.
Prints one JSON object; writes it and a latency histogram PNG under --out.

    .venv/bin/python bench/serve_load.py --clients 4 --seconds 10 --extra 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PING_EVERY_FRAMES = 6


def speech(seconds: float) -> np.ndarray:
    """Real espeak-ng speech, repeated to `seconds`."""
    from plexray.audio.espeak import synthesize

    sentence = synthesize("Hi, I would like a large coffee with oat milk, and could you tell me the price?")
    repeats = int(np.ceil(seconds * SAMPLE_RATE / sentence.size))
    return np.tile(sentence, repeats)[: int(seconds * SAMPLE_RATE)]


def percentiles(values: list[float]) -> dict:
    array = np.asarray(values)
    return {"p50_ms": round(float(np.percentile(array, 50)), 2), "p99_ms": round(float(np.percentile(array, 99)), 2),
            "max_ms": round(float(array.max()), 2), "count": int(array.size)} if values else {"count": 0}


class RoundTrips:
    """Matches each sent user frame with the first agent audio that arrives after it."""

    def __init__(self, latencies: list[float]):
        self.latencies = latencies
        self.sent_at: list[float] = []
        self.matched = 0

    def sent(self) -> None:
        self.sent_at.append(time.perf_counter())

    def received(self) -> None:
        now = time.perf_counter()
        while self.matched < len(self.sent_at) and self.sent_at[self.matched] <= now:
            self.latencies.append((now - self.sent_at[self.matched]) * 1000)
            self.matched += 1


async def stream_in_real_time(frames: np.ndarray, send, trips: RoundTrips) -> None:
    start = time.perf_counter()
    for k, frame in enumerate(frames):
        await asyncio.sleep(max(0.0, start + k * FRAME_S - time.perf_counter()))
        trips.sent()
        await send(frame)


# ----- engine alone ---------------------------------------------------------------------------------
async def engine_client(engine, pcm: np.ndarray, latencies: list[float]) -> None:
    from plexray.serve.engine import SessionSettings

    session = engine.open_session(SessionSettings(text_prompt="You take coffee orders."))
    await session.wait_ready()
    frames = pcm.reshape(-1, FRAME_SAMPLES)
    trips = RoundTrips(latencies)

    async def push(frame):
        session.push_pcm(frame)

    sender = asyncio.create_task(stream_in_real_time(frames, push, trips))
    while not (sender.done() and trips.matched == len(frames)):
        if await session.next_output() is None:
            break
        trips.received()
    await sender
    session.close()


async def engine_alone(clients: int, pcm: np.ndarray, checkpoint: str) -> dict:
    from plexray.model import load_model
    from plexray.serve.engine import Engine, EngineConfig

    engine = Engine(load_model(checkpoint), EngineConfig(max_sessions=clients))
    loop_task = asyncio.create_task(engine.run())
    latencies: list[float] = []
    await asyncio.gather(*(engine_client(engine, pcm, latencies) for _ in range(clients)))
    engine.stop()
    await loop_task
    metrics = engine.metrics()
    engine.close()
    return {"latency": latencies, "tick_ms_p50": metrics["tick_ms_p50"], "tick_ms_p99": metrics["tick_ms_p99"],
            "late_ticks": metrics["late_ticks"]}


# ----- through the ingress --------------------------------------------------------------------------
async def chat_client(url: str, pcm: np.ndarray, latencies: list[float], ping_ms: list[float],
                      held: asyncio.Event, release: asyncio.Event) -> None:
    from plexray.serve.app.clients import ChatClient

    async with ChatClient.connect(url, text_prompt="You take coffee orders.") as chat:
        await chat.handshake()
        held.set()
        frames = pcm.reshape(-1, FRAME_SAMPLES)
        trips = RoundTrips(latencies)
        pings: list[float] = []  # send times of pings not yet answered

        async def send(frame):
            await chat.send_pcm(frame)
            if len(trips.sent_at) % PING_EVERY_FRAMES == 0:  # 0x06 through proxy and replica, not the engine
                pings.append(time.perf_counter())
                await chat.send_raw(bytes([0x06]))

        sender = asyncio.create_task(stream_in_real_time(frames, send, trips))
        while not (sender.done() and trips.matched == len(frames) and not pings):
            kind, value = await chat.next_event()
            if kind == "audio" and value.size:
                trips.received()
            elif kind == "ping" and pings:
                ping_ms.append((time.perf_counter() - pings.pop(0)) * 1000)
        await sender
        await release.wait()  # hold the session until the extra callers have been answered


async def refused_caller(url: str) -> dict:
    from plexray.serve.app.clients import ChatClient, Refused

    started = time.perf_counter()
    try:
        async with ChatClient.connect(url) as chat:
            await asyncio.wait_for(chat.handshake(), 30)
    except Refused as refused:
        return {"refused": refused.code == 1013 and bool(refused.message), "code": refused.code,
                "seconds": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001 - a hang or a bare 500 is what this counts
        return {"refused": False, "code": None, "error": repr(exc), "seconds": time.perf_counter() - started}
    return {"refused": False, "code": None, "error": "admitted beyond the cap", "seconds": time.perf_counter() - started}


async def through_ingress(base: str, clients: int, extra: int, pcm: np.ndarray) -> dict:
    url = base + "/api/chat"
    latencies: list[float] = []
    ping_ms: list[float] = []
    held = [asyncio.Event() for _ in range(clients)]
    release = asyncio.Event()
    tasks = [asyncio.create_task(chat_client(url, pcm, latencies, ping_ms, event, release)) for event in held]
    await asyncio.gather(*(event.wait() for event in held))
    refusals = [await refused_caller(url) for _ in range(extra)]  # the fleet is full: all are streaming
    release.set()
    await asyncio.gather(*tasks)
    return {"latency": latencies, "ping_ms": ping_ms, "refusals": refusals}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def histogram(path: Path, engine_ms: list[float], ingress_ms: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = float(np.percentile(engine_ms + ingress_ms, 99.5))
    bins = np.linspace(0, top, 60)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    axis.hist(engine_ms, bins=bins, alpha=0.6, label=f"engine alone (p50 {np.median(engine_ms):.0f} ms)")
    axis.hist(ingress_ms, bins=bins, alpha=0.6, label=f"through the ingress (p50 {np.median(ingress_ms):.0f} ms)")
    axis.set_xlabel("frame round trip: user frame sent -> next agent audio decoded (ms)")
    axis.set_ylabel("frames")
    axis.set_title("plexray serve_load: demo model, loopback, real-time Opus speech")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent conversations (= sessions_per_replica)")
    parser.add_argument("--seconds", type=float, default=10.0, help="speech each client streams")
    parser.add_argument("--extra", type=int, default=3, help="callers beyond the cap, expected to be refused")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from plexray.model import ensure_demo_checkpoint
    from plexray.model.reference import default_demo_dir

    checkpoint = str(ensure_demo_checkpoint(default_demo_dir()))
    pcm = speech(args.seconds)
    pcm = pcm[: pcm.size - pcm.size % FRAME_SAMPLES]

    print(f"[1/2] engine alone: {args.clients} sessions, {args.seconds} s of speech each", file=sys.stderr)
    baseline = asyncio.run(engine_alone(args.clients, pcm, checkpoint))

    import ray
    from ray import serve

    from plexray.serve.app.builders import ops_app, sessions_app

    repo = Path(__file__).resolve().parent.parent
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"working_dir": str(repo), "excludes": [".venv", "artifacts", ".git", "**/__pycache__"],
                          "env_vars": {"PLEXRAY_DEMO_DIR": checkpoint}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app_args = {"set": [f"serve.sessions_per_replica={args.clients}", "serve.num_cpus=1",
                        "serve.autoscaling={min_replicas: 1, max_replicas: 1}",
                        "serve.security.new_sessions_per_minute=1000"]}
    print(f"[2/2] through the ingress on 127.0.0.1:{port}, then {args.extra} callers beyond the cap", file=sys.stderr)
    try:
        serve.run(sessions_app(app_args), name="plexray", route_prefix="/")
        serve.run(ops_app(app_args), name="plexray-ops", route_prefix="/voice")
        ingress = asyncio.run(asyncio.wait_for(
            through_ingress(f"ws://127.0.0.1:{port}", args.clients, args.extra, pcm), args.seconds + 120))
        import httpx

        fleet = httpx.get(f"http://127.0.0.1:{port}/voice/status", timeout=10).json()
    finally:
        serve.shutdown()
        ray.shutdown()

    engine_stats, ingress_stats = percentiles(baseline["latency"]), percentiles(ingress["latency"])
    refusals = ingress["refusals"]
    summary = {
        "benchmark": "serve_load", "clients": args.clients, "seconds_each": args.seconds,
        "cpu_count": os.cpu_count(), "model": "demo",
        "sessions_held": args.clients if len(ingress["latency"]) else 0,
        "engine_alone": {**engine_stats, "tick_ms_p50": baseline["tick_ms_p50"], "tick_ms_p99": baseline["tick_ms_p99"],
                         "late_ticks": baseline["late_ticks"]},
        "through_ingress": {**ingress_stats, "ping_round_trip": percentiles(ingress["ping_ms"]),
                            "replica_metrics": [r["metrics"] for r in fleet["replicas"]]},
        "ingress_overhead_ms_p50": round(ingress_stats["p50_ms"] - engine_stats["p50_ms"], 2),
        "ingress_over_engine_p50_ratio": round(ingress_stats["p50_ms"] / engine_stats["p50_ms"], 2),
        "ingress_over_engine_p99_ratio": round(ingress_stats["p99_ms"] / engine_stats["p99_ms"], 2),
        "extra_callers": args.extra,
        "rejected_correctly": sum(r["refused"] for r in refusals),
        "time_to_reject_ms": percentiles([r["seconds"] * 1000 for r in refusals]),
        "refusals": [{k: v for k, v in r.items() if k != "seconds"} for r in refusals],
    }
    png = args.out / "serve_load_latency.png"
    histogram(png, baseline["latency"], ingress["latency"])
    summary["histogram_png"] = str(png)
    (args.out / "serve_load.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
