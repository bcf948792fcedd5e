"""Load benchmark of the Serve app: N clients stream real Opus speech in real time over loopback.

Measures, in one run on the same machine:
  * in-replica frame latency, from timestamps carried in the frames: the replica stamps each client
    message when its WebSocket receive returns, the engine carries the stamp of the user frame a tick
    consumed into that tick's agent frame, and the replica records (its metrics, via /voice/status)
      full    = message received -> agent frame handed to the socket,
      engine  = message received -> agent frame published by the engine (input decode and push, the
                wait for the next 80 ms tick, the tick),
      ingress = full - engine per frame: what the ingress adds after the engine (event-loop wake-up,
                Opus encode, socket send);
  * engine alone: the engine share of the same frames against an Engine in this process (no Ray, no
    sockets, the stamp taken at push_pcm), with its tick times: the baseline of the engine share;
  * ping: 0x06 round trips client -> Serve proxy -> the replica's app -> back, while it streams
    (no engine): what the proxy and the sockets add outside the replica;
  * admission: with the fleet full (and no waiting line), extra callers must be refused (close 1013 +
    error message): how many were refused correctly and how long the refusal took.
The ingress overhead is the in-replica ingress share plus the ping round trip. Prints one JSON object
and writes it under --out.

    .venv/bin/python bench/serve_load.py --clients 4 --seconds 10 --extra 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # serve_on_loopback: a free port
from serve_on_loopback import free_port  # noqa: E402

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
PING_EVERY_FRAMES = 6
STATUS_REPORT_S = 0.5  # replicas report their metrics this often (serve.status_report_s) during the benchmarks
PROMPT = "You take coffee orders."


def speech(seconds: float) -> np.ndarray:
    """Real espeak-ng speech, repeated to `seconds`, cut to whole 80 ms frames."""
    from plexray.audio.espeak import synthesize

    sentence = synthesize("Hi, I would like a large coffee with oat milk, and could you tell me the price?")
    repeats = int(np.ceil(seconds * SAMPLE_RATE / sentence.size))
    pcm = np.tile(sentence, repeats)[: int(seconds * SAMPLE_RATE)]
    return pcm[: pcm.size - pcm.size % FRAME_SAMPLES]


def percentiles(values: list[float]) -> dict:
    array = np.asarray(values)
    return {"p50_ms": round(float(np.percentile(array, 50)), 2), "p99_ms": round(float(np.percentile(array, 99)), 2),
            "max_ms": round(float(array.max()), 2), "count": int(array.size)} if values else {"count": 0}


async def stream_in_real_time(frames: np.ndarray, send) -> None:
    """Call `send(k, frame)` for every frame at its real-time slot (catching up, never bunching ahead)."""
    start = time.perf_counter()
    for k, frame in enumerate(frames):
        await asyncio.sleep(max(0.0, start + k * FRAME_S - time.perf_counter()))
        await send(k, frame)


# ----- engine alone ---------------------------------------------------------------------------------
async def engine_client(engine, pcm: np.ndarray, engine_share_ms: list[float]) -> None:
    from plexray.serve.engine import SessionSettings

    session = engine.open_session(SessionSettings(text_prompt=PROMPT))
    await session.wait_ready()
    frames = pcm.reshape(-1, FRAME_SAMPLES)

    async def push(k, frame):
        session.push_pcm(frame)  # stamped now (time.monotonic()), as the replica stamps a received message

    sender = asyncio.create_task(stream_in_real_time(frames, push))
    stamped = 0
    while stamped < len(frames):  # every frame pushed comes back stamped in one agent frame
        try:  # unless it was dropped (a late reader): then stop a second after the last push
            output = await asyncio.wait_for(session.next_output(), 1.0 if sender.done() else None)
        except asyncio.TimeoutError:
            break
        if output is None:
            break
        if output.input_received_at is not None:
            engine_share_ms.append((output.produced_at - output.input_received_at) * 1000)
            stamped += 1
    await sender
    session.close()


async def engine_alone(clients: int, pcm: np.ndarray, checkpoint: str) -> dict:
    from plexray.model import load_model
    from plexray.serve.engine import Engine, EngineConfig

    engine = Engine(load_model(checkpoint), EngineConfig(max_sessions=clients))
    loop_task = asyncio.create_task(engine.run())
    engine_share_ms: list[float] = []
    await asyncio.gather(*(engine_client(engine, pcm, engine_share_ms) for _ in range(clients)))
    engine.stop()
    await loop_task
    metrics = engine.metrics()
    engine.close()
    return {"engine_share_ms": engine_share_ms, "tick_ms_p50": metrics["tick_ms_p50"],
            "tick_ms_p99": metrics["tick_ms_p99"], "late_ticks": metrics["late_ticks"]}


# ----- through the ingress --------------------------------------------------------------------------
async def chat_client(url: str, pcm: np.ndarray, ping_ms: list[float], held: asyncio.Event,
                      streamed: asyncio.Event, release: asyncio.Event) -> None:
    from plexray.serve.app.clients import ChatClient

    async with ChatClient.connect(url, text_prompt=PROMPT) as chat:
        await chat.handshake()
        held.set()
        pings: list[float] = []  # send times of pings not yet answered

        async def send(k, frame):
            await chat.send_pcm(frame)
            if k % PING_EVERY_FRAMES == 0:  # 0x06 through proxy and replica, not the engine
                pings.append(time.perf_counter())
                await chat.send_raw(bytes([0x06]))

        async def read() -> None:  # every agent message is read, so none waits in a buffer
            while True:
                kind, _ = await chat.next_event()
                if kind == "ping" and pings:
                    ping_ms.append((time.perf_counter() - pings.pop(0)) * 1000)

        reader = asyncio.create_task(read())
        await stream_in_real_time(pcm.reshape(-1, FRAME_SAMPLES), send)
        await asyncio.sleep(0.5)  # the last frames' agent answers and pongs
        streamed.set()
        await release.wait()  # hold the session until the extra callers and the metrics are done
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


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


async def replica_metrics(base: str) -> list[dict]:
    """Each replica's metrics as /voice/status shows them, after the next report has landed."""
    import httpx

    await asyncio.sleep(2 * STATUS_REPORT_S)
    async with httpx.AsyncClient(base_url=base.replace("ws://", "http://"), timeout=10) as http:
        fleet = (await http.get("/voice/status")).json()
    return [replica["metrics"] for replica in fleet["replicas"]]


async def through_ingress(base: str, clients: int, extra: int, pcm: np.ndarray) -> dict:
    url = base + "/api/chat"
    ping_ms: list[float] = []
    held = [asyncio.Event() for _ in range(clients)]
    streamed = [asyncio.Event() for _ in range(clients)]
    release = asyncio.Event()
    tasks = [asyncio.create_task(chat_client(url, pcm, ping_ms, h, s, release)) for h, s in zip(held, streamed)]
    await asyncio.gather(*(event.wait() for event in held))
    refusals = [await refused_caller(url) for _ in range(extra)]  # the fleet is full: all are streaming
    await asyncio.gather(*(event.wait() for event in streamed))
    metrics = await replica_metrics(base)  # while the sessions are still held
    release.set()
    await asyncio.gather(*tasks)
    return {"ping_ms": ping_ms, "refusals": refusals, "replica_metrics": metrics}


def start_ray(checkpoint: str) -> int:
    """A fresh local Ray cluster and Serve's proxy on a free loopback port (returned)."""
    import ray
    from ray import serve

    repo = Path(__file__).resolve().parent.parent
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"working_dir": str(repo), "excludes": [".venv", "artifacts", ".git", "**/__pycache__"],
                          "env_vars": {"PLEXRAY_DEMO_DIR": checkpoint}})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


def app_settings(sessions: int, *more: str) -> dict:
    """Application args of one replica with `sessions` slots on 1 CPU, reporting every STATUS_REPORT_S."""
    return {"set": [f"serve.sessions_per_replica={sessions}", "serve.num_cpus=1",
                    "serve.autoscaling={min_replicas: 1, max_replicas: 1}",
                    "serve.security.new_sessions_per_minute=1000", f"serve.status_report_s={STATUS_REPORT_S}",
                    *more]}


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


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

    load_at_start = load_average()
    checkpoint = str(ensure_demo_checkpoint(default_demo_dir()))
    pcm = speech(args.seconds)

    print(f"[1/2] engine alone: {args.clients} sessions, {args.seconds} s of speech each", file=sys.stderr)
    baseline = asyncio.run(engine_alone(args.clients, pcm, checkpoint))

    import ray
    from ray import serve

    from plexray.serve.app.builders import ops_app, sessions_app

    port = start_ray(checkpoint)
    # No waiting line: the callers beyond the cap are to be refused at once (with one, they would wait
    # serve.waiting_line.max_wait_s for a slot first).
    settings = app_settings(args.clients, "serve.waiting_line.max_callers_per_replica=0")
    print(f"[2/2] through the ingress on 127.0.0.1:{port}, then {args.extra} callers beyond the cap", file=sys.stderr)
    try:
        serve.run(sessions_app(settings), name="plexray", route_prefix="/")
        serve.run(ops_app(settings), name="plexray-ops", route_prefix="/voice")
        ingress = asyncio.run(asyncio.wait_for(
            through_ingress(f"ws://127.0.0.1:{port}", args.clients, args.extra, pcm), args.seconds + 120))
    finally:
        serve.shutdown()
        ray.shutdown()

    [replica] = ingress["replica_metrics"]  # one replica
    refusals = ingress["refusals"]
    ping = percentiles(ingress["ping_ms"])
    summary = {
        "benchmark": "serve_load", "clients": args.clients, "seconds_each": args.seconds,
        "cpu_count": os.cpu_count(), "model": "demo",
        "load_average_1m": {"start": load_at_start, "end": load_average()},
        "clients_share_cores": True,  # clients, Serve's proxy and the replica all run on this machine
        "engine_alone": {"engine_share": percentiles(baseline["engine_share_ms"]),
                         "tick_ms_p50": baseline["tick_ms_p50"], "tick_ms_p99": baseline["tick_ms_p99"],
                         "late_ticks": baseline["late_ticks"]},
        "through_ingress": {
            "in_replica_frame_latency_ms": {"p50": replica["frame_latency_ms_p50"],
                                            "p99": replica["frame_latency_ms_p99"]},
            "engine_share_ms": {"p50": replica["engine_share_ms_p50"], "p99": replica["engine_share_ms_p99"]},
            "ingress_share_ms": {"p50": replica["ingress_share_ms_p50"], "p99": replica["ingress_share_ms_p99"]},
            "frames_timed": replica["latency_frames"],
            "ping_round_trip": ping,
            "replica_metrics": replica,
        },
        # What the ingress adds to a frame: its share inside the replica, plus the proxy and the sockets
        # (the ping round trip, which does not touch the engine).
        "ingress_overhead_ms": {"in_replica_p50": replica["ingress_share_ms_p50"],
                                "in_replica_p99": replica["ingress_share_ms_p99"],
                                "ping_round_trip_p50": ping.get("p50_ms"), "ping_round_trip_p99": ping.get("p99_ms")},
        "extra_callers": args.extra, "waiting_line": 0,
        "rejected_correctly": sum(r["refused"] for r in refusals),
        "time_to_reject_ms": percentiles([r["seconds"] * 1000 for r in refusals]),
        "refusals": [{k: v for k, v in r.items() if k != "seconds"} for r in refusals],
    }
    (args.out / "serve_load.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
