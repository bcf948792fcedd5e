"""The attack suite's fleet: both applications on one Serve instance on loopback (see attacks.FLEET_OVERRIDES)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve_app"))  # serve_helpers, shared with those tests


@pytest.fixture(scope="module")
def attack_fleet(ray_cluster):
    from ray import serve

    from attacks import FLEET_OVERRIDES
    from plexray.serve.app.builders import ops_app, sessions_app
    from serve_helpers import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"set": FLEET_OVERRIDES}
    serve.run(sessions_app(args), name="plexray", route_prefix="/")
    serve.run(ops_app(args), name="plexray-ops", route_prefix="/voice")
    yield {"ws": f"ws://127.0.0.1:{port}", "http": f"http://127.0.0.1:{port}"}
    serve.shutdown()
