"""`plexray demo`: the platform's main job, end to end, on its embedded defaults.

One command walks the whole product on a laptop-sized machine:

    1. a local Ray cluster with the dashboard        5. evaluation of base vs fine-tuned, then merge
    2. the demo checkpoint (built once)              6. Ray Serve with the merged model
    3. a persona dataset with Ray Data               7. a scripted conversation over the WebSocket
    4. LoRA fine-tuning with Ray Train (2 workers)      protocol, the user spoken by espeak-ng
                                                     8. behaviour of base vs fine-tuned (turn-taking,
                                                        interruptions, backchannels, role) on the
                                                        serving engine

Each step reuses what an earlier run already built in the work directory (the dataset resumes by
conversation id, a finished training run and a merged checkpoint are kept), and the command ends
with a summary JSON: where every artifact is, loss before and after, serving latency, the
behavioural report, dashboard.

The console shows the platform's own progress (one line per step, with counts and timings) and Ray
Data's progress bars; Ray's internal log lines (operator plans, Train reports, Serve deployment
messages, the workers' output) go to <workdir>/logs/ instead. Errors reach the console in full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import time
from pathlib import Path

import numpy as np
import sphn

from plexray.serve.proxy_hook import enable_in_this_environment
from plexray.settings import add_config_arguments, load_platform_config

DEFAULT_WORKDIR = Path("artifacts/demo")
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune")  # ray.data and ray.serve do not propagate
# The user's side of the scripted conversation, one line per turn, spoken by espeak-ng.
USER_LINES = [
    "Hi there! Could I get a large oat milk latte, please?",
    "Actually, can you make it extra hot? And how much is that?",
]
LISTEN_AFTER_LINE_S = 1.5  # the user stays silent this long after each line, so the agent can answer


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the platform end to end: data, training, serving, a conversation")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="where every artifact goes")
    parser.add_argument("--keep-serving", action="store_true",
                        help="keep the cluster and the Serve app running at the end (Ctrl-C stops)")
    add_config_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_demo(load_platform_config(args), args.workdir, keep_serving=args.keep_serving)
    return 0


def run_demo(config, workdir: Path, keep_serving: bool = False) -> dict:
    """Run every step; returns the summary (also written to <workdir>/summary.json)."""
    import ray

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict = {"workdir": str(workdir)}
    step = _Steps(total=8)

    step("Ray cluster")
    if not ray.is_initialized():
        enable_in_this_environment()  # Serve's proxy answers the WebSocket handshakes it refuses
        # Ray's worker pool warns at every few multiples of how many workers may start at once (by default
        # the machine's cores: 2 here), which the demo's data, training, serving and evaluation steps pass on
        # purpose (~20 workers); 8 at once moves the warning past them.
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "8")
        # log_to_driver=False: the workers' output stays in Ray's session logs (linked under logs/).
        context = ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=4,
                           log_to_driver=False)
        summary["dashboard"] = f"http://{context.dashboard_url}" if context.dashboard_url else None
    summary["logs"] = str(_send_ray_logs_to(workdir / "logs"))
    print(f"      dashboard: {summary.get('dashboard') or 'not started (using an existing cluster)'}")
    print(f"      Ray's logs: {summary['logs']}")

    step("demo checkpoint")
    summary["random_weights"] = config.model.checkpoint == "demo"
    if summary["random_weights"]:
        from plexray.model import ensure_demo_checkpoint

        config.model.checkpoint = str(ensure_demo_checkpoint(workdir / "checkpoint"))
    summary["base_checkpoint"] = config.model.checkpoint
    print(f"      {config.model.checkpoint}")

    step("persona dataset (Ray Data)")
    summary["dataset"] = build_dataset(config, workdir)
    step.finished(f"{summary['dataset']['written']} conversations written, {summary['dataset']['rejected']} rejected")

    step("LoRA fine-tuning (Ray Train)")
    summary["training"] = fine_tune(config, workdir)
    step.finished(f"{summary['training']['steps']} steps on {summary['training']['num_workers']} workers; "
                  f"adapter {summary['training']['adapter']}")

    step("evaluate and merge")
    summary["validation_loss"], merged = evaluate_and_merge(config, Path(summary["training"]["adapter"]), workdir)
    summary["merged_checkpoint"] = str(merged)
    print(f"      validation loss {summary['validation_loss']['before']:.3f} -> "
          f"{summary['validation_loss']['after']:.3f}; merged -> {merged}")

    step("Ray Serve with the fine-tuned model")
    base_url = _deploy(config, merged)
    summary["endpoints"] = {"binary": f"ws://{base_url}/api/chat", "json": f"ws://{base_url}/ws/voice/{{persona}}",
                            "status": f"http://{base_url}/voice/status", "talk_page": f"http://{base_url}/voice/talk"}
    print(f"      {summary['endpoints']['binary']}  (talk page: {summary['endpoints']['talk_page']})")

    step("scripted conversation over the WebSocket protocol")
    conversation = asyncio.run(_converse(f"ws://{base_url}/api/chat", workdir))
    summary["conversation"] = conversation
    step.finished(f"{conversation['reply_seconds']} s of reply audio, first audio after "
                  f"{conversation['first_audio_s']} s")
    if not keep_serving:  # the evaluation's engines get the CPUs the replicas held
        _undeploy(config)

    step("behaviour, base vs fine-tuned, on the serving engine")
    from plexray.evaluation.pipeline import digest, evaluate_behaviour_once

    behaviour = evaluate_behaviour_once(config, {"base": summary["base_checkpoint"], "tuned": str(merged)},
                                        workdir / "behaviour")
    summary["behaviour"] = digest(behaviour, workdir / "behaviour")
    step.finished(f"{summary['behaviour']['conversations']} test conversations per checkpoint; "
                  f"report {summary['behaviour']['report']}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(ending(summary, keep_serving))
    if keep_serving:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        _undeploy(config)
    return summary


def build_dataset(config, workdir: Path) -> dict:
    """Step 3: the persona dataset in <workdir>/data; a rerun resumes it (conversations already written are kept)."""
    from plexray.data.pipeline import generate

    config.data.output_dir = str(workdir / "data")
    manifest = generate(config)
    return {"dir": config.data.output_dir, "written": manifest.get("written"), "rejected": manifest.get("rejected"),
            "hours": manifest.get("hours_of_audio")}


def fine_tune(config, workdir: Path) -> dict:
    """Step 4: LoRA fine-tuning on the dataset into <workdir>/train; a finished run's summary is reused."""
    from plexray.train.run import SUMMARY_FILE, run_training

    config.train.dataset = config.data.output_dir
    config.train.output_dir = str(workdir / "train")
    run_summary_file = Path(config.train.output_dir) / config.train.run_name / SUMMARY_FILE
    training = json.loads(run_summary_file.read_text()) if run_summary_file.is_file() else run_training(config)
    adapter = Path(training["best_checkpoint"] or training["latest_checkpoint"])
    return {k: training.get(k) for k in ("run_dir", "steps", "num_workers", "trainable_parameters", "loss_curve",
                                         "frames_per_s_per_worker", "wall_seconds")} | {"adapter": str(adapter)}


def evaluate_and_merge(config, adapter: Path, workdir: Path) -> tuple[dict, Path]:
    """Step 5: validation loss of the base and the adapter, and the adapter merged into <workdir>/merged
    (kept when a merged checkpoint is already there)."""
    from plexray.train.evaluate import evaluate_checkpoint
    from plexray.train.merge import merge_checkpoint

    before = evaluate_checkpoint(config, None, config.train.dataset, "validation")
    after = evaluate_checkpoint(config, adapter, config.train.dataset, "validation")
    merged = workdir / "merged"
    if not (merged / "config.json").is_file():
        merge_checkpoint(config.model, adapter, merged)
    return {"before": before.get("loss"), "after": after.get("loss")}, merged


def ending(summary: dict, keep_serving: bool) -> str:
    """What the demo made and what to do next, for a person (summary.json has everything, for programs)."""
    conversation, endpoints = summary["conversation"], summary["endpoints"]
    lines = [f"Done in {summary['seconds']:.0f} s. Everything it made: {summary['workdir']} "
             f"(summary.json lists it all).", ""]
    if summary["random_weights"]:
        lines += ["The demo model has PersonaPlex's architecture at toy size with random weights, so what it says is",
                  "noise; everything around it (data, training, serving, evaluation) is the real platform. For the",
                  "real model see docs/real-weights.md.", ""]
    lines += ["Look at:",
              f"  training loss curve   {summary['training']['loss_curve']}",
              f"  behaviour report      {summary['behaviour']['report']}  (base vs fine-tuned)",
              f"  the conversation      {conversation['user_wav']} (user), {conversation['reply_wav']} (agent)"]
    if keep_serving:
        lines += ["", "Serving (Ctrl-C stops):",
                  f"  talk page             {endpoints['talk_page']}",
                  f"  NVIDIA's protocol     {endpoints['binary']}",
                  f"  status                {endpoints['status']}"]
    else:
        lines += ["", "Talk to the fine-tuned model in a browser: run the demo again with --keep-serving",
                  "  (.venv/bin/plexray demo --config configs/demo.yaml --keep-serving; it reuses what this run",
                  "  built) and open the talk page it prints."]
    return "\n".join(lines)


def _undeploy(config) -> None:
    from ray import serve

    serve.delete(config.serve.app_name)
    serve.delete(f"{config.serve.app_name}-ops")


class _Steps:
    """The demo's progress: `[3/7] title (t=12 s)` when a step starts, `done in 40 s: counts` when it ends."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.perf_counter()
        self.step_started = self.started

    def __call__(self, title: str) -> None:
        self.done += 1
        self.step_started = time.perf_counter()
        print(f"[{self.done}/{self.total}] {title} (t={self.step_started - self.started:.0f} s)", flush=True)

    def finished(self, counts: str) -> None:
        print(f"      done in {time.perf_counter() - self.step_started:.0f} s: {counts}", flush=True)


def _send_ray_logs_to(log_dir: Path) -> Path:
    """Ray's log lines in this process go to <log_dir>/ray-driver.log (errors still to the console);
    <log_dir>/ray-session links to Ray's session logs, where the workers' output is. Returns log_dir."""
    import ray
    import ray.data, ray.serve, ray.train  # noqa: F401  (they set up their loggers on import: before we change them)

    log_dir.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_dir / "ray-driver.log")
    to_file.set_name("plexray-demo-ray-log")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if handler.get_name() == to_file.get_name():  # an earlier run's, in the same process
                logger.removeHandler(handler)
            elif isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.ERROR)
        logger.addHandler(to_file)
    session_logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    link = log_dir / "ray-session"
    link.unlink(missing_ok=True)
    link.symlink_to(session_logs, target_is_directory=True)
    return log_dir


def _deploy(config, merged: Path) -> str:
    """Start Serve on a free loopback port (or reuse the running proxy) with both applications."""
    from ray import serve

    from plexray.serve.app.deployments import ops_application, sessions_application

    served = config.model_copy(deep=True)
    served.model.checkpoint = str(merged)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # A Serve instance already running (a re-run on the same cluster) keeps its own port: ask it.
    # Ray has no public call for the proxy's port; the controller client holds it.
    from ray.serve.context import _get_global_client

    port = _get_global_client().http_config.port
    name = served.serve.app_name
    serve.run(sessions_application(served), name=name, route_prefix="/")
    serve.run(ops_application(served), name=f"{name}-ops", route_prefix="/voice")
    return f"127.0.0.1:{port}"


async def _converse(url: str, workdir: Path) -> dict:
    """Speak each user line in real time (80 ms Opus frames), listen, and record what the agent says."""
    from plexray.audio.espeak import EspeakVoice, synthesize
    from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
    from plexray.serve.app.clients import ChatClient

    frame_s = FRAME_SAMPLES / SAMPLE_RATE
    silence = np.zeros(int(LISTEN_AFTER_LINE_S * SAMPLE_RATE), np.float32)
    user_audio = np.concatenate([np.concatenate([synthesize(line, EspeakVoice(variant="m3")), silence])
                                 for line in USER_LINES])
    frames = [user_audio[i:i + FRAME_SAMPLES] for i in range(0, len(user_audio), FRAME_SAMPLES)]
    reply_audio, reply_text, first_audio_s = [], [], None
    connect_started = time.perf_counter()
    async with ChatClient.connect(url) as chat:
        await chat.handshake()
        handshake_s = time.perf_counter() - connect_started
        talk_started = time.perf_counter()

        async def speak():
            for index, frame in enumerate(frames):  # real time: frame i leaves at i x 80 ms
                await asyncio.sleep(max(0.0, talk_started + index * frame_s - time.perf_counter()))
                await chat.send_pcm(frame)

        speaker = asyncio.create_task(speak())
        received_s = 0.0
        print("      agent's text: ", end="", flush=True)
        while received_s < len(user_audio) / SAMPLE_RATE:
            kind, payload = await asyncio.wait_for(chat.next_event(), timeout=30)
            if kind == "audio" and len(payload):
                first_audio_s = first_audio_s or time.perf_counter() - talk_started
                reply_audio.append(payload)
                received_s += len(payload) / SAMPLE_RATE
            elif kind == "text":
                reply_text.append(payload)
                print(payload, end="", flush=True)
            elif kind == "error":
                raise RuntimeError(f"server error during the demo conversation: {payload}")
        await speaker
    print()
    reply = np.concatenate(reply_audio) if reply_audio else np.zeros(0, np.float32)
    reply_wav, user_wav, transcript = workdir / "reply.wav", workdir / "user.wav", workdir / "transcript.json"
    sphn.write_wav(str(reply_wav), reply, SAMPLE_RATE)
    sphn.write_wav(str(user_wav), user_audio, SAMPLE_RATE)
    transcript.write_text(json.dumps({"user": USER_LINES, "agent_text": "".join(reply_text)}, indent=2))
    return {"reply_wav": str(reply_wav), "user_wav": str(user_wav), "transcript": str(transcript),
            "user_seconds": round(len(user_audio) / SAMPLE_RATE, 2), "reply_seconds": round(len(reply) / SAMPLE_RATE, 2),
            "handshake_s": round(handshake_s, 3), "first_audio_s": round(first_audio_s or -1, 3),
            "agent_text": "".join(reply_text)}
