"""plexray's engine against NVIDIA's own inference (golden files) and against PyPI moshi's LMGen.

tests/golden/personaplex-toy holds a small PersonaPlex checkpoint (scripts/nvidia_parity/
make_checkpoint.py) and what NVIDIA's code did with it (scripts/nvidia_parity/run_nvidia.py,
NVIDIA/personaplex's moshi fork, greedy): the voice .pt it wrote, the Mimi codes of the user's
audio, the greedy text token of every prompt step, and the text + agent tokens of 101 steps.
NVIDIA's first output after the prompt is the prompt's last frame; plexray emits from the first
generated frame, so plexray's output i is NVIDIA's output i + 1.

In a batch, the compared session's user codes are NVIDIA's (checked alone, through Mimi, by the
other tests): the toy Mimi's deeper quantizer stages have near-ties, and a batched convolution
differs from a batch-1 one in the last bit, which flips some of its codes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sphn
import torch
from moshi.models.lm import LMGen

from plexray.model import load_model
from plexray.model.prompt import FRAME_SAMPLES
from plexray.model.voices import encode_voice
from plexray.serve.engine import Engine, EngineConfig, SessionSettings
from engine_helpers import GENERATED_FRAMES, GREEDY, run_session
from repo_paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # as the golden files were made
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "personaplex-toy"
# Sessions that share the batch with the compared one: other prompts, voices, sampling, join times.
NEIGHBOURS = [SessionSettings(text_prompt="You sell umbrellas.", voice=None, text_seed=7, audio_seed=8),
              SessionSettings(text_prompt="", voice="NATF0", text_temperature=1.0, audio_topk=40, text_seed=9)]


@pytest.fixture(scope="module")
def golden() -> dict:
    return json.loads((GOLDEN_DIR / "golden.json").read_text())


@pytest.fixture(scope="module")
def user_pcm() -> np.ndarray:
    return sphn.read(str(GOLDEN_DIR / "user.wav"))[0][0].astype(np.float32)


def _checkpoint_with_voice(tmp_path_factory, suffix: str) -> Path:
    """The golden checkpoint with only NATF0's .wav or only its .pt (the engine prefers a .pt)."""
    directory = tmp_path_factory.mktemp(f"golden-{suffix.strip('.')}")
    for path in GOLDEN_DIR.iterdir():
        if path.is_file():
            shutil.copy(path, directory / path.name)
    (directory / "voices").mkdir()
    shutil.copy(GOLDEN_DIR / "voices" / f"NATF0{suffix}", directory / "voices" / f"NATF0{suffix}")
    return directory


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict:
    return {source: load_model(str(_checkpoint_with_voice(tmp_path_factory, f".{source}")))
            for source in ("wav", "pt")}


def test_voices_make_writes_what_nvidia_writes(tmp_path):
    """`plexray voices make` on NATF0.wav writes NVIDIA's own NATF0.pt: same layout, same values."""
    from plexray.cli import main

    assert main(["voices", "make", str(GOLDEN_DIR / "voices" / "NATF0.wav"), "--checkpoint", str(GOLDEN_DIR),
                 "--dtype", "float32", "--output-dir", str(tmp_path)]) == 0
    ours = torch.load(tmp_path / "NATF0.pt", weights_only=True)
    nvidias = torch.load(GOLDEN_DIR / "voices" / "NATF0.pt", weights_only=True)
    assert set(ours) == set(nvidias) == {"embeddings", "cache"}
    assert ours["embeddings"].shape == nvidias["embeddings"].shape and ours["embeddings"].dim() == 4
    assert torch.equal(ours["cache"], nvidias["cache"])
    torch.testing.assert_close(ours["embeddings"], nvidias["embeddings"], rtol=0, atol=1e-6)
    written, _ = sphn.read(str(tmp_path / "NATF0.wav"))
    assert written.shape[1] == sphn.read(str(GOLDEN_DIR / "voices" / "NATF0.wav"))[0].shape[1]


def test_mimi_encodes_the_users_audio_as_nvidia(bundles, golden, user_pcm):
    codes = encode_voice(bundles["wav"].mimi, user_pcm)  # streaming, frame by frame, as the engine
    assert codes.T.tolist() == golden["user_codes"]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
@pytest.mark.parametrize("source", ["wav", "pt"])
def test_engine_tokens_equal_nvidias(bundles, golden, user_pcm, source, batched):
    expected = golden["sessions"][source]
    settings = SessionSettings(text_prompt=golden["text_prompt"], voice="NATF0", **GREEDY)
    with Engine(bundles[source], EngineConfig(max_sessions=3 if batched else 1)) as engine:
        prompt_tokens, outputs = run_session(engine, settings, user_pcm, NEIGHBOURS if batched else [],
                                      golden["user_codes"] if batched else None)
    assert len(prompt_tokens) == expected["prompt_steps"]  # NVIDIA runs P - 1 transformer steps for P frames
    assert prompt_tokens == expected["prompt_text_argmax"]
    assert outputs == expected["outputs"][1:1 + GENERATED_FRAMES]


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
def test_moshi_family_tokens_equal_moshis_lmgen(moshi_bundle, user_pcm, batched):
    """The Moshi family against PyPI moshi's own generator, greedy, on the same user codes.

    LMGen's step o reads the user's frame o and never uses frame 0 (its first step sees only
    initial tokens); the engine's first step after joining takes no audio. So the engine's user
    frames are LMGen's frames 1..100, and Mimi's streaming state starts at frame 1 for both.
    """
    user_codes = encode_voice(moshi_bundle.mimi, user_pcm[FRAME_SAMPLES:])  # [8, 100]
    expected = []
    generator = LMGen(moshi_bundle.lm, use_sampling=False)
    with torch.no_grad(), generator.streaming(1):
        for frame in torch.cat([user_codes[:, :1], user_codes], dim=1).T:  # frame 0 is never read
            tokens = generator.step(frame[None, :, None])
            if tokens is not None:
                expected.append(tokens[0, :9, 0].tolist())
    with Engine(moshi_bundle, EngineConfig(max_sessions=3 if batched else 1)) as engine:
        _, outputs = run_session(engine, SessionSettings(**GREEDY), user_pcm[FRAME_SAMPLES:],
                          NEIGHBOURS[:1] if batched else [], user_codes.T.tolist() if batched else None)
    assert outputs == expected[:GENERATED_FRAMES]
