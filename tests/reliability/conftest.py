"""The attack suite's fleet: both applications on one Serve instance on loopback (see attacks.FLEET_OVERRIDES)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve_app"))  # serve_helpers, shared with those tests


@pytest.fixture(scope="module")
def attack_fleet(ray_cluster):
    from attacks import FLEET_OVERRIDES
    from serve_on_loopback import loopback_fleet

    with loopback_fleet(FLEET_OVERRIDES) as urls:
        yield urls
