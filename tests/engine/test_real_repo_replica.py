"""The real repository's path, end to end at toy size: `hf://nvidia/personaplex-7b-v1` from the HF
cache (config.json without architecture, moshi 0.1 tensor names, voices.tgz with NVIDIA's own
NATF0.pt, dist.tgz), the platform supplying the architecture, and a greedy conversation with the
shipped voice that follows NVIDIA's own inference."""

from __future__ import annotations

import numpy as np
import pytest
import sphn

from nvidia_golden import MIN_DECISIVE_LOGITS, agreements, load_golden, nvidia_path_session
from plexray.errors import CheckpointError
from plexray.model import load_model
from plexray.model.prompt import PromptCodes
from plexray.serve.engine import Engine, EngineConfig
from replica import GOLDEN_DIR, NVIDIA_REPO, REPLICA_ARCHITECTURE, make_hub_cache, write_personaplex_replica
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny steps: one thread is faster here

@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """The replica in an HF cache, with HF_HUB_OFFLINE=1 as huggingface_hub reads it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    replica = write_personaplex_replica(tmp_path / "replica", web_client=REPO_ROOT / "tests/browser/standin_client")
    make_hub_cache(tmp_path / "hub", NVIDIA_REPO, replica)
    return str(tmp_path / "hub")


def test_without_an_architecture_the_platform_supplies_the_released_one(hub_cache):
    released_depformer = r"linear_in\.weight: checkpoint \[88, 16\] vs personaplex LM \[5632, 1024\]"
    with pytest.raises(CheckpointError, match=released_depformer):
        load_model(f"hf://{NVIDIA_REPO}", cache_dir=hub_cache)


def test_replica_loads_as_the_real_repo(hub_cache):
    bundle = load_model(f"hf://{NVIDIA_REPO}", cache_dir=hub_cache, **REPLICA_ARCHITECTURE)
    assert bundle.family == "personaplex" and bundle.lm.dep_q == 16
    assert bundle.prompt_codes == PromptCodes.real_mimi()  # NVIDIA's fixed codes, as NVIDIA's code uses
    assert sorted(bundle.voices) == ["NATF0"] and bundle.voices["NATF0"].pt_path is not None
    assert bundle.files.web_client is not None and bundle.files.hub_repo == NVIDIA_REPO


def test_replica_converses_with_the_shipped_voice_as_nvidia_does(hub_cache):
    """Along NVIDIA's own greedy path (teacher forcing, see nvidia_golden.py), the replica's logits are
    NVIDIA's and so is every decisive token."""
    golden = load_golden()
    user_pcm = sphn.read(str(GOLDEN_DIR / "user.wav"))[0][0].astype(np.float32)
    bundle = load_model(f"hf://{NVIDIA_REPO}", cache_dir=hub_cache, **REPLICA_ARCHITECTURE)
    with Engine(bundle, EngineConfig(max_sessions=1)) as engine:
        trace = nvidia_path_session(engine, golden, "pt", user_pcm)
    for agreement in agreements(trace, golden, "pt"):
        agreement.check(MIN_DECISIVE_LOGITS)
