"""Replica capacity: the most sessions one replica holds at real time over the full path, beside the engine alone.

For N in a rising list (each side stops after its first failure), in one run on one machine:
  * full path: one replica with N slots (serve.sessions_per_replica = N, serve.num_cpus = 1) behind
    Serve's proxy; N real clients speak NVIDIA's binary protocol: real espeak-ng speech as Ogg/Opus in
    real time for --seconds, a 0x06 ping every 6 frames, every agent message read (counted with its
    arrival time, not decoded: the clients must stay cheap, they share the cores). The replica does
    all it does in production: Opus decode and encode, the protocol, the event loop, the engine.
    Held at real time: the replica's tick p99 < 80 ms over the round, and every client received at
    least 95% of the agent frames due while it streamed, with no gap over 0.5 s after its handshake.
  * engine alone: Engine(max_sessions=N) in this process, N sessions pushing the same speech as PCM in
    real time from asyncio, every output read. Held at real time: tick p99 < 80 ms.
`full_path_over_engine_alone` = the two largest N held: what the serving path around the engine costs.

Each round starts a fresh replica of exactly N slots: an engine steps all its slots every tick, taken
or not, so a replica sized for the largest N would cost the same at every N (and both sides would not
run the same batch); a fresh replica also starts its metrics afresh. The tick p99 is over the last
`tick_history` ticks when the streaming ends, a window that must lie after every handshake (checked:
`tick_window_after_handshakes`), so prefill ticks and idle ticks are not in it.

    .venv/bin/python bench/serve_capacity.py --sessions 1,2,4,8,12,16,24,32 --seconds 8
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

from serve_load import (FRAME_S, PING_EVERY_FRAMES, PROMPT, STATUS_REPORT_S, app_settings, load_average,
                        percentiles, speech, start_ray)

from plexray.model.prompt import FRAME_SAMPLES

REALTIME_MS = 80.0
MIN_FRAMES_FRACTION = 0.95  # of the agent frames due while the client streamed
MAX_GAP_S = 0.5  # between agent frames, after the handshake
SETTLE_S = 2 * STATUS_REPORT_S  # after the last handshake: steady ticks, and a metrics report made after it
HANDSHAKE_TIMEOUT_S = 90.0


def tick_window(seconds: float) -> int:
    """Ticks in the window of the tick percentiles: the streaming time less a second of margin for the report's lag."""
    return max(10, int((seconds - 1.0) / FRAME_S))


def round_ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Arrivals:
    """One client's agent frames: arrival times (time.monotonic()) after its handshake."""

    def __init__(self) -> None:
        self.handshake_at: float | None = None
        self.frames: list[float] = []

    def summary(self, start: float, end: float) -> dict:
        due = round((end - start) / FRAME_S)
        received = sum(start <= t <= end for t in self.frames)
        times = [self.handshake_at, *(t for t in self.frames if t <= end), end]
        longest_gap = max(b - a for a, b in zip(times, times[1:]))
        return {"due": due, "received": received, "longest_gap_s": round(longest_gap, 3)}


def held_by_clients(clients: list[dict]) -> bool:
    return all(c["received"] >= MIN_FRAMES_FRACTION * c["due"] and c["longest_gap_s"] <= MAX_GAP_S for c in clients)


def client_figures(clients: list[dict]) -> dict:
    return {"frames_received_min_fraction": round(min(c["received"] / c["due"] for c in clients), 3),
            "frames_received": sum(c["received"] for c in clients), "frames_due": sum(c["due"] for c in clients),
            "longest_gap_s": max(c["longest_gap_s"] for c in clients)}


# ----- full path: a replica behind Serve's proxy -------------------------------------------------
def opus_pages(pcm: np.ndarray) -> list[bytes]:
    """The speech as Ogg/Opus, one message body per 80 ms frame: encoded once, replayed by every client."""
    import sphn

    from plexray.model.prompt import SAMPLE_RATE

    writer = sphn.OpusStreamWriter(SAMPLE_RATE)
    return [writer.append_pcm(frame) for frame in pcm.reshape(-1, FRAME_SAMPLES)]


async def replica_metrics(ledger) -> dict:
    """The replica's metrics as it last reported them to the admission ledger (what /voice/status shows)."""
    snapshot = await asyncio.to_thread(lambda: ledger.snapshot.remote().result(timeout_s=30))
    [replica] = snapshot["replicas"]  # one replica
    return replica["metrics"]


async def full_path_round(port: int, ledger, sessions: int, pages: list[bytes], seconds: float) -> dict:
    from plexray.serve.app import binary_protocol
    from plexray.serve.app.clients import ChatClient

    url = f"ws://127.0.0.1:{port}/api/chat"
    arrivals = [Arrivals() for _ in range(sessions)]
    ping_ms: list[float] = []
    handshaken = [asyncio.Event() for _ in range(sessions)]
    go, done = asyncio.Event(), asyncio.Event()
    errors: list[str] = []

    async def client(index: int) -> None:
        mine = arrivals[index]
        pings: list[float] = []
        try:
            async with ChatClient.connect(url, text_prompt=PROMPT) as chat:
                await asyncio.wait_for(chat.handshake(), HANDSHAKE_TIMEOUT_S)
                mine.handshake_at = time.monotonic()
                handshaken[index].set()

                async def read() -> None:
                    while True:
                        message = await chat.ws.recv()
                        if message[0] == binary_protocol.Kind.AUDIO:
                            mine.frames.append(time.monotonic())
                        elif message[0] == binary_protocol.Kind.PING and pings:
                            ping_ms.append((time.perf_counter() - pings.pop(0)) * 1000)

                reader = asyncio.create_task(read())
                await go.wait()
                started = time.perf_counter()
                for k, page in enumerate(pages):
                    await asyncio.sleep(max(0.0, started + k * FRAME_S - time.perf_counter()))
                    await chat.send_raw(binary_protocol.audio(page))
                    if k % PING_EVERY_FRAMES == 0:  # through the proxy and the replica's app, not the engine
                        pings.append(time.perf_counter())
                        await chat.send_raw(binary_protocol.ping())
                await done.wait()
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        except Exception as exc:  # noqa: BLE001 - a refusal, a timeout, a dropped connection: the round failed
            errors.append(f"client {index}: {exc!r}"[:300])
            handshaken[index].set()

    tasks = [asyncio.create_task(client(index)) for index in range(sessions)]
    await asyncio.gather(*(event.wait() for event in handshaken))
    await asyncio.sleep(SETTLE_S)  # steady ticks, and a report made after every handshake
    before = await replica_metrics(ledger)
    go.set()
    start = time.monotonic()
    await asyncio.sleep(len(pages) * FRAME_S)
    end = time.monotonic()
    after = await replica_metrics(ledger)  # tick window: the last ticks of the streaming
    done.set()
    await asyncio.gather(*tasks)
    if errors or any(a.handshake_at is None for a in arrivals):
        return {"held": False, "errors": errors}
    clients = [a.summary(start, end) for a in arrivals]
    window_after_handshakes = after["ticks"] - tick_window(seconds) >= before["ticks"]
    tick_ok = after["tick_ms_p99"] is not None and after["tick_ms_p99"] < REALTIME_MS
    return {
        "held": bool(tick_ok and held_by_clients(clients)),
        "tick_ms_p50": after["tick_ms_p50"], "tick_ms_p99": after["tick_ms_p99"],
        "tick_window_after_handshakes": window_after_handshakes,
        "late_ticks": after["late_ticks"] - before["late_ticks"],
        **client_figures(clients),
        "in_replica_frame_latency_ms": {"p50": after["frame_latency_ms_p50"], "p99": after["frame_latency_ms_p99"]},
        "engine_share_ms": {"p50": after["engine_share_ms_p50"], "p99": after["engine_share_ms_p99"]},
        "ingress_share_ms": {"p50": after["ingress_share_ms_p50"], "p99": after["ingress_share_ms_p99"]},
        "ping_ms": {"p50": percentiles(ping_ms).get("p50_ms"), "p99": percentiles(ping_ms).get("p99_ms")},
        "frames_dropped": after["frames_dropped"],
    }


# ----- engine alone: this process, no sockets -----------------------------------------------------
async def engine_round(bundle, sessions: int, pcm: np.ndarray, seconds: float) -> dict:
    from plexray.serve.engine import Engine, EngineConfig, SessionSettings

    engine = Engine(bundle, EngineConfig(max_sessions=sessions, tick_history=tick_window(seconds)))
    runner = asyncio.create_task(engine.run())
    live = [engine.open_session(SessionSettings(text_prompt=PROMPT)) for _ in range(sessions)]
    arrivals = [Arrivals() for _ in range(sessions)]
    engine_share_ms: list[float] = []
    frames = pcm.reshape(-1, FRAME_SAMPLES)
    go = asyncio.Event()

    async def client(session, mine: Arrivals) -> None:
        await session.wait_ready()
        mine.handshake_at = time.monotonic()

        async def read() -> None:
            while (output := await session.next_output()) is not None:
                mine.frames.append(time.monotonic())
                if output.input_received_at is not None:
                    engine_share_ms.append((output.produced_at - output.input_received_at) * 1000)

        reader = asyncio.create_task(read())
        await go.wait()
        started = time.perf_counter()
        for k, frame in enumerate(frames):
            await asyncio.sleep(max(0.0, started + k * FRAME_S - time.perf_counter()))
            session.push_pcm(frame)
        await reader  # until the session is closed

    tasks = [asyncio.create_task(client(session, mine)) for session, mine in zip(live, arrivals)]
    await asyncio.gather(*(session.wait_ready() for session in live))
    await asyncio.sleep(SETTLE_S)
    before = engine.metrics()
    go.set()
    start = time.monotonic()
    await asyncio.sleep(len(frames) * FRAME_S)
    end = time.monotonic()
    after = engine.metrics()
    for session in live:
        session.close()
    await asyncio.gather(*tasks)
    engine.stop()
    await runner
    engine.close()
    clients = [a.summary(start, end) for a in arrivals]
    share = percentiles(engine_share_ms)
    return {
        "held": bool(after["tick_ms_p99"] is not None and after["tick_ms_p99"] < REALTIME_MS),
        "tick_ms_p50": after["tick_ms_p50"], "tick_ms_p99": after["tick_ms_p99"],
        "tick_window_after_handshakes": after["ticks"] - tick_window(seconds) >= before["ticks"],
        "late_ticks": after["late_ticks"] - before["late_ticks"],
        **client_figures(clients),
        "engine_share_ms": {"p50": share.get("p50_ms"), "p99": share.get("p99_ms")},
        "frames_dropped": after["frames_dropped"],
    }


def progress(side: str, result: dict) -> str:
    return (f"{side} {'held' if result['held'] else 'NOT held'} (tick p99 {result.get('tick_ms_p99')} ms, "
            f"frames {result.get('frames_received_min_fraction')}, gap {result.get('longest_gap_s')} s"
            + (f", errors {result['errors'][:2]}" if result.get("errors") else "") + ")")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,2,4,8,12,16,24,32", help="N tried, rising")
    parser.add_argument("--seconds", type=float, default=8.0, help="speech each client streams per round")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(n) for n in args.sessions.split(","))

    import torch

    from plexray.model import ensure_demo_checkpoint, load_model
    from plexray.model.reference import default_demo_dir

    # Ray gives a replica of num_cpus=1 one OpenMP thread (OMP_NUM_THREADS=1); the engine alone gets the same.
    torch.set_num_threads(1)
    load_at_start = load_average()
    checkpoint = str(ensure_demo_checkpoint(default_demo_dir()))
    bundle = load_model(checkpoint)
    pcm = speech(args.seconds)
    pages = opus_pages(pcm)

    from ray import serve

    from plexray.serve.app.builders import sessions_app
    from plexray.serve.app.deployments import LEDGER_DEPLOYMENT

    port = start_ray(checkpoint)
    window = f"serve.engine.tick_history={tick_window(args.seconds)}"
    rounds: list[dict] = []
    failed = {"full_path": False, "engine_alone": False}
    try:
        for sessions in sizes:
            result: dict = {"sessions": sessions, "load_average_1m": load_average()}
            if not failed["engine_alone"]:  # no replica runs meanwhile: each round's was deleted
                result["engine_alone"] = asyncio.run(engine_round(bundle, sessions, pcm, args.seconds))
                failed["engine_alone"] = not result["engine_alone"]["held"]
            if not failed["full_path"]:
                serve.run(sessions_app(app_settings(sessions, window)), name="plexray", route_prefix="/")
                ledger = serve.get_deployment_handle(LEDGER_DEPLOYMENT, app_name="plexray")
                try:
                    result["full_path"] = asyncio.run(asyncio.wait_for(
                        full_path_round(port, ledger, sessions, pages, args.seconds),
                        args.seconds + 3 * HANDSHAKE_TIMEOUT_S))
                except TimeoutError:
                    result["full_path"] = {"held": False, "errors": ["the round did not finish in time"]}
                finally:
                    serve.delete("plexray")
                failed["full_path"] = not result["full_path"]["held"]
            rounds.append(result)
            print(f"N={sessions}: " + "; ".join(progress(side, result[side]) for side in ("engine_alone", "full_path")
                                                if side in result) + f"; load {result['load_average_1m']}",
                  file=sys.stderr)
            if all(failed.values()):
                break
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()

    def largest_held(side: str) -> int:
        held = [r["sessions"] for r in rounds if side in r and r[side]["held"]]
        return max(held, default=0)

    full, alone = largest_held("full_path"), largest_held("engine_alone")
    summary = {
        "benchmark": "serve_capacity", "model": "demo", "seconds_each": args.seconds,
        "cpu_count": os.cpu_count(),
        "load_average_1m": {"start": load_at_start, "end": load_average()},
        # Clients, Serve's proxy and controller, the replica and the engine-alone side all share these cores.
        "clients_share_cores": True,
        "replica": {"num_cpus": 1, "torch_threads": "1 (OMP_NUM_THREADS from Ray)"},
        "engine_alone_torch_threads": torch.get_num_threads(),
        "rule": {"tick_ms_p99_below": REALTIME_MS, "frames_received_at_least": MIN_FRAMES_FRACTION,
                 "longest_gap_s_at_most": MAX_GAP_S, "tick_window_ticks": tick_window(args.seconds)},
        "by_sessions": rounds,
        "max_sessions_full_path": full,
        "max_sessions_engine_alone": alone,
        "full_path_over_engine_alone": round(full / alone, 3) if alone else None,
        "max_is_lower_bound": {side: any(r.get(side, {}).get("held") for r in rounds if r["sessions"] == max(sizes))
                               for side in ("full_path", "engine_alone")},
    }
    (args.out / "serve_capacity.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
