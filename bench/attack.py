"""The attack suite's full run: every category of malformed input, both protocols and the HTTP routes,
against a live fleet on loopback while a good session talks; then a burst of extra callers on the full
fleet. Prints the figures as one JSON object and writes it under --out (see tests/reliability/attacks.py).

    flock /tmp/plexray-heavy.lock .venv/bin/python bench/attack.py --scale 4 --burst 60

The same inputs, capped per category, run in CI: tests/reliability/test_attacks.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))  # serve_on_loopback: the fleet on a free port
sys.path.insert(0, str(REPO_ROOT / "tests" / "serve_app"))  # serve_helpers: the serve-app tests' fleet settings
sys.path.insert(0, str(REPO_ROOT / "tests" / "reliability"))  # attacks: the inputs and the run

import attacks  # noqa: E402
from serve_helpers import API_KEY, SESSIONS_PER_REPLICA  # noqa: E402
from serve_on_loopback import loopback_fleet  # noqa: E402

from plexray.serve.proxy_hook import enable_in_this_environment  # noqa: E402

RUN_LIMIT_S = 900  # the whole attack is cut off past this (the full run takes a few minutes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4, help="multiplies the generated inputs of each category")
    parser.add_argument("--burst", type=int, default=60, help="extra callers at once on the full fleet")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import ray

    from plexray.model import ensure_demo_checkpoint
    from plexray.model.reference import default_demo_dir

    checkpoint = str(ensure_demo_checkpoint(default_demo_dir()))
    load_before = os.getloadavg()
    enable_in_this_environment()  # the proxy answers the handshakes it refuses (plexray/serve/proxy_hook.py)
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"working_dir": str(REPO_ROOT), "excludes": [".venv", "artifacts", ".git", "**/__pycache__"],
                          "env_vars": {"PLEXRAY_DEMO_DIR": checkpoint}})
    try:
        with loopback_fleet(attacks.FLEET_OVERRIDES) as urls:
            logs = attacks.LogWatch(attacks.serve_log_dir())
            replicas_before = attacks.session_replica_actors()
            logs.start()
            started = time.monotonic()
            figures = asyncio.run(asyncio.wait_for(attacks.attack(
                urls, API_KEY, scale=args.scale, burst_callers=args.burst, capacity=SESSIONS_PER_REPLICA,
                max_message_bytes=attacks.MAX_MESSAGE_BYTES), RUN_LIMIT_S))
            figures["logs"] = logs.figures()
            figures["replica_restarts"] = len(replicas_before - attacks.session_replica_actors())
            figures["run_s"] = round(time.monotonic() - started, 1)
    finally:
        ray.shutdown()
    summary = {"benchmark": "attack", "command": " ".join(sys.argv), "cpu_count": os.cpu_count(),
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], **figures}
    text = json.dumps(summary, indent=1)
    (args.out / "attack.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
