"""Serve-app fixtures: real espeak speech, and one Serve instance on loopback with both applications."""

from __future__ import annotations

import numpy as np
import pytest

from serve_on_loopback import loopback_fleet
from serve_helpers import OVERRIDES


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """About 2 s of real espeak-ng speech, float32 24 kHz."""
    from plexray.audio.espeak import synthesize

    return synthesize("Hello there, could I get a large coffee with milk please?")


@pytest.fixture(scope="module")
def serve_fleet(ray_cluster, request):
    """Both applications on a fresh Serve instance; yields the base URLs. Everything is removed at the end.

    A test module may add config overrides of its own in FLEET_OVERRIDES (applied after OVERRIDES)."""
    with loopback_fleet([*OVERRIDES, *getattr(request.module, "FLEET_OVERRIDES", [])]) as urls:
        yield urls
