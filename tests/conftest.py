"""Shared fixtures: one demo checkpoint and one local Ray cluster for the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plexray.serve.proxy_hook import enable_in_this_environment
from ray_startup import allow_slow_ray_start
from repo_paths import REPO_ROOT

allow_slow_ray_start()  # here, before any test module imports Ray (it reads the setting on import)
enable_in_this_environment()  # Serve's proxies answer the WebSocket handshakes they refuse


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """The built-in demo checkpoint (personaplex family), built once per session.

    PLEXRAY_DEMO_DIR points at it, so `checkpoint: demo` in any process (Ray workers too) finds it.
    """
    from plexray.model import init_demo

    directory = init_demo(tmp_path_factory.mktemp("demo") / "personaplex")
    os.environ["PLEXRAY_DEMO_DIR"] = str(directory)
    return directory


@pytest.fixture(scope="session")
def moshi_demo_checkpoint(tmp_path_factory) -> Path:
    from plexray.model import init_demo

    return init_demo(tmp_path_factory.mktemp("demo") / "moshi", family="moshi")


@pytest.fixture(scope="session")
def demo_bundle(demo_checkpoint):
    from plexray.model import load_model

    return load_model(str(demo_checkpoint))


@pytest.fixture(scope="session")
def ray_cluster(demo_checkpoint):
    """One local Ray cluster per test session (4 logical CPUs on this 2-core machine).

    Workers run with the repo as working dir, as under `ray job submit --working-dir .`.
    """
    import ray

    runtime_env = {
        "working_dir": str(REPO_ROOT),
        "excludes": [".venv", "artifacts", ".git", "**/__pycache__"],
        "env_vars": {"PLEXRAY_DEMO_DIR": str(demo_checkpoint)},
    }
    # address="local": always a fresh cluster of our own, never one a developer left running.
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    yield ray
    ray.shutdown()
