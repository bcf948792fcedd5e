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


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test.

    The golden files of NVIDIA's inference were made on one thread: kernels split over several
    threads round differently, and near-tied codes of the toy models flip with the last bit. One
    thread is also several times faster for thousands of tiny ticks on this 2-core machine.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
