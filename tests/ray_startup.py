"""Starting Ray in the tests on a slow, shared machine: wait for readiness, not for a fixed time.

Ray gives its dashboard a fixed time to come up (RAY_DASHBOARD_STARTUP_TIMEOUT_S, read when Ray is
imported) and `ray start --head` gives up after it. On a loaded machine that is not enough, so the
tests raise it to their own bound, RAY_START_WAIT_S, which only catches a start-up that hangs: a
process that dies is reported at once.
"""

from __future__ import annotations

import os
import time
import typing as tp

T = tp.TypeVar("T")

RAY_START_WAIT_S = 600  # below pytest's per-test timeout (pyproject), which covers a fixture's start-up too
DASHBOARD_WAIT_VARIABLE = "RAY_DASHBOARD_STARTUP_TIMEOUT_S"


def head_environment(environment: tp.Mapping[str, str]) -> dict[str, str]:
    """`environment` with Ray's dashboard wait raised to RAY_START_WAIT_S (a developer's own setting wins)."""
    return {DASHBOARD_WAIT_VARIABLE: str(RAY_START_WAIT_S), **environment}


def allow_slow_ray_start() -> None:
    """For Ray started in this process (`ray.init`): call before Ray is imported."""
    os.environ.update(head_environment(os.environ))


def wait_until_ready(attempt: tp.Callable[[], T], is_not_ready: tp.Callable[[Exception], bool],
                     head_is_running: tp.Callable[[], bool], what: str, poll_s: float = 0.5) -> T:
    """attempt() until it stops failing with a not-ready error; fail at once when the head process
    has exited, and after RAY_START_WAIT_S only if it still is not ready (a hang)."""
    deadline = time.monotonic() + RAY_START_WAIT_S
    while True:
        try:
            return attempt()
        except Exception as exc:
            if not is_not_ready(exc):
                raise
            if not head_is_running():
                raise RuntimeError(f"the head node exited while waiting for {what}: {exc}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} was not ready after {RAY_START_WAIT_S} s: {exc}") from exc
        time.sleep(poll_s)
