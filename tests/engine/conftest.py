"""Engine test fixtures: an own copy of the demo model (engines put it in streaming mode)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def engine_bundle(demo_checkpoint):
    from plexray.model import load_model

    return load_model(str(demo_checkpoint))


@pytest.fixture(scope="session")
def moshi_bundle(moshi_demo_checkpoint):
    from plexray.model import load_model

    return load_model(str(moshi_demo_checkpoint))


@pytest.fixture
def make_engine(engine_bundle):
    """Build engines on the demo model; each is closed (model released) at the end of the test."""
    from plexray.serve.engine import Engine, EngineConfig

    engines = []

    def make(bundle=None, **config):
        engine = Engine(bundle or engine_bundle, EngineConfig(**config))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
