"""A head node with Ray's job API for the `ray job submit` tests (tests/train/test_documented_jobs.py), and
its start-up on a slow machine.

The session's cluster runs without the dashboard, and the job API lives in the dashboard, so this
module starts one head node with it (`ray start --head --block`, in a temp dir) and stops it by
ending that process: it never touches any other Ray instance on the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ray_startup import RAY_START_WAIT_S, head_environment, wait_until_ready
from serve_on_loopback import free_port

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
        client = JobSubmissionClient(address)
        _wait_for_the_job_api(client, head)
        yield client, head
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head process stops the node it started
        head.wait(timeout=60)


def _wait_for_the_job_api(client, head) -> None:
    """The head's job agent registers a while after the banner (longer on a loaded machine): a first job is
    submitted as soon as it takes jobs, and followed to its end, so the tests' own jobs never race the agent."""
    job_id = wait_until_ready(lambda: client.submit_job(entrypoint="python -c 'print(1)'"),
                              is_not_ready=lambda exc: isinstance(exc, RuntimeError) and "No available agent" in str(exc),
                              head_is_running=lambda: head.poll() is None, what="the job agent")

    async def follow() -> str:
        return "".join([chunk async for chunk in client.tail_job_logs(job_id)])  # ends when the job ends

    logs = asyncio.run(follow())
    status = client.get_job_status(job_id)
    assert str(status) in ("SUCCEEDED", "JobStatus.SUCCEEDED"), logs[-3000:]


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
