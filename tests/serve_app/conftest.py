"""Serve-app fixtures: real espeak speech, and one Serve instance on loopback with both applications."""

from __future__ import annotations

import numpy as np
import pytest

from serve_helpers import OVERRIDES, free_port


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """About 2 s of real espeak-ng speech, float32 24 kHz."""
    from plexray.audio.espeak import synthesize

    return synthesize("Hello there, could I get a large coffee with milk please?")


@pytest.fixture(scope="module")
def serve_fleet(ray_cluster, request):
    """Both applications on a fresh Serve instance; yields the base URLs. Everything is removed at the end.

    A test module may add config overrides of its own in FLEET_OVERRIDES (applied after OVERRIDES)."""
    from ray import serve

    from plexray.serve.app.builders import ops_app, sessions_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"set": [*OVERRIDES, *getattr(request.module, "FLEET_OVERRIDES", [])]}
    serve.run(sessions_app(args), name="plexray", route_prefix="/")
    serve.run(ops_app(args), name="plexray-ops", route_prefix="/voice")
    yield {"ws": f"ws://127.0.0.1:{port}", "http": f"http://127.0.0.1:{port}"}
    serve.shutdown()
