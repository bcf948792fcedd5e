"""The one compile switch (model.compile) and the engine's two GPU-oriented paths: torch.compile of
moshi's kernels inside the engine's step (runs on CPU too, through TorchInductor and the C compiler)
and CUDA graphs of the step (a CUDA feature: tested only where CUDA is present)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch._dynamo

from engine_helpers import GREEDY, run_alone, user_audio
from plexray.model import load_model
from plexray.model.compile import set_torch_compile, torch_compile_enabled
from plexray.serve.engine import Engine, EngineConfig, SessionSettings
from repo_paths import REPO_ROOT

TOY_CHECKPOINT = REPO_ROOT / "tests/golden/personaplex-toy"
TICKS = 12  # prompt prefill (a few ticks) and a handful of live frames
SETTINGS = SessionSettings(text_prompt="Be brief.", **GREEDY)


@pytest.fixture
def restore_compile_switch():
    """The switch is process-wide: leave it as this test found it for the tests that follow."""
    before = torch_compile_enabled()
    yield
    set_torch_compile(before)


def _greedy_outputs(bundle, **engine_config) -> list:
    engine = Engine(bundle, EngineConfig(max_sessions=1, **engine_config))
    try:
        session = engine.open_session(SETTINGS)
        outputs = run_alone(engine, session, user_audio(seed=1, frames=TICKS), TICKS)
    finally:
        engine.close()
    assert outputs, "the session produced no frame"
    return outputs


def test_importing_plexray_model_leaves_the_compile_switch_alone():
    """A process's compile setting is changed by loading a model, never by an import."""
    probe = ("from moshi.utils import compile as moshi_compile\n"
             "moshi_compile._compile_disabled = False\n"
             "import plexray.model, plexray.serve.engine, plexray.train, plexray.data\n"
             "print(moshi_compile._compile_disabled)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_loading_a_model_applies_model_compile(restore_compile_switch):
    load_model(str(TOY_CHECKPOINT), compile=True)
    assert torch_compile_enabled()
    load_model(str(TOY_CHECKPOINT))
    assert not torch_compile_enabled()


def test_the_engine_has_no_compile_switch_of_its_own():
    with pytest.raises(ValueError, match="torch_compile was removed: set model.compile instead"):
        EngineConfig(torch_compile=True)


def test_the_engine_step_runs_compiled_on_cpu(restore_compile_switch):
    eager = _greedy_outputs(load_model(str(TOY_CHECKPOINT)))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = _greedy_outputs(load_model(str(TOY_CHECKPOINT), compile=True))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "nothing went through torch.compile"
    assert [o.text_token for o in compiled] == [o.text_token for o in eager]
    assert [list(o.audio_codes) for o in compiled] == [list(o.audio_codes) for o in eager]
    np.testing.assert_allclose(np.concatenate([o.pcm for o in compiled]), np.concatenate([o.pcm for o in eager]),
                               atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="CUDA graphs are a CUDA feature: without a CUDA device the engine runs the step eagerly "
                           "(cuda_graphs is ignored on CPU)")
def test_cuda_graphs_step_matches_the_eager_step():
    """The graphed step replays captured kernels over static buffers (state swapped in for slot-view
    prefill, aliased outputs, a fixed k_max): the same greedy session must give the same frames."""
    bundle = load_model(str(TOY_CHECKPOINT), device="cuda")
    eager = _greedy_outputs(bundle)
    graphed = _greedy_outputs(bundle, cuda_graphs=True)
    assert [o.text_token for o in graphed] == [o.text_token for o in eager]
    assert [list(o.audio_codes) for o in graphed] == [list(o.audio_codes) for o in eager]
