"""`ray job submit` of jobs/train.py through Ray's job API, on a cluster of this module's own.

The session's cluster runs without the dashboard, and the job API lives in the dashboard, so this
module starts one head node with it (`ray start --head --block`, in a temp dir) and stops it by
ending that process: it never touches any other Ray instance on the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ray_startup import RAY_START_WAIT_S, head_environment, wait_until_ready
from serve_on_loopback import free_port
from shards import train_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def job_cluster(demo_checkpoint, tmp_path_factory):
    """A head node with the dashboard; yields the job API's client and the head process."""
    from ray.job_submission import JobSubmissionClient

    # Every fixed default port of a node: other Ray instances on this machine may hold the defaults.
    ports = {flag: free_port() for flag in ("port", "dashboard-port", "dashboard-agent-listen-port",
                                             "dashboard-agent-grpc-port", "metrics-export-port",
                                             "runtime-env-agent-port", "ray-client-server-port")}
    env = head_environment(os.environ | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
                                         "PLEXRAY_DEMO_DIR": str(demo_checkpoint), "RAY_ADDRESS": ""})
    temp_dir = tmp_path_factory.mktemp("ray-jobs")
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", "--num-cpus=4", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *[f"--{flag}={port}" for flag, port in ports.items()]],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        banner = []
        for line in head.stdout:  # the banner comes once the node (dashboard included) is up
            banner.append(line)
            if "Ray runtime started" in line:
                break
        else:
            raise RuntimeError("ray start --head failed:\n" + "".join(banner))
        yield JobSubmissionClient(address), head
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head process stops the node it started
        head.wait(timeout=60)


def _submit_when_ready(cluster, **job) -> str:
    """The head's job agent registers a while after the banner (longer on a loaded machine): submit
    as soon as it takes jobs."""
    client, head = cluster
    return wait_until_ready(lambda: client.submit_job(**job),
                            is_not_ready=lambda exc: isinstance(exc, RuntimeError) and "No available agent" in str(exc),
                            head_is_running=lambda: head.poll() is None, what="the job agent")


def test_ray_job_submit_runs_jobs_train(job_cluster, train_set, tmp_path):
    overrides = train_overrides(train_set, tmp_path / "runs", **{
        "train.run_name": "submitted", "train.num_workers": 1, "train.max_steps": 2, "train.eval_every": 2})
    entrypoint = " ".join(["python jobs/train.py --config configs/train-demo.yaml",
                           *[f"--set {item}" for item in overrides]])
    job_id = _submit_when_ready(job_cluster, entrypoint=entrypoint, runtime_env={
        "working_dir": str(REPO_ROOT), "excludes": [".venv", "artifacts", ".git", "**/__pycache__"]})
    client, _ = job_cluster

    async def follow() -> str:
        text = []
        async for chunk in client.tail_job_logs(job_id):  # ends when the job ends
            text.append(chunk)
        return "".join(text)

    logs = asyncio.run(follow())
    status = client.get_job_status(job_id)
    assert str(status) in ("SUCCEEDED", "JobStatus.SUCCEEDED"), logs[-3000:]
    summary = json.loads((tmp_path / "runs" / "submitted" / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2


# The start-up of the test cluster on a slow machine, without starting one.

def test_the_head_node_waits_for_a_slow_dashboard():
    """Ray's own wait for the dashboard (RAY_DASHBOARD_STARTUP_TIMEOUT_S, 60 s in Ray 2.53, 20 s before)
    is raised to the tests' start-up bound, in the head's environment."""
    assert int(head_environment({})["RAY_DASHBOARD_STARTUP_TIMEOUT_S"]) >= RAY_START_WAIT_S >= 300
    assert head_environment({"RAY_DASHBOARD_STARTUP_TIMEOUT_S": "900"})["RAY_DASHBOARD_STARTUP_TIMEOUT_S"] == "900"


def test_waiting_for_the_job_api_ends_when_it_answers_or_the_head_dies():
    answers = iter([RuntimeError("No available agent to submit job"), RuntimeError("No available agent"), "job-1"])

    def submit():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_until_ready(submit, is_not_ready=lambda exc: "No available agent" in str(exc),
                            head_is_running=lambda: True, what="the job API", poll_s=0) == "job-1"
    with pytest.raises(RuntimeError, match="the head node exited while waiting for the job API"):
        wait_until_ready(submit_never_ready, is_not_ready=lambda exc: True,
                         head_is_running=lambda: False, what="the job API", poll_s=0)


def submit_never_ready():
    raise RuntimeError("No available agent to submit job")
