"""plexray against NVIDIA's own inference (golden files) and against PyPI moshi's LMGen.

tests/golden/personaplex-toy holds a small PersonaPlex checkpoint (scripts/nvidia_parity/
make_checkpoint.py) and what NVIDIA's code did with it (scripts/nvidia_parity/run_nvidia.py,
NVIDIA/personaplex's moshi fork, greedy): the voice .pt it wrote, the Mimi codes and latents of
the user's audio and of the voice, and per voice source its greedy tokens with the logits behind
them. The comparisons hold on any CPU and still catch a real difference (nvidia_golden.py): the
engine follows NVIDIA's tokens and its logits must match NVIDIA's within a float32 tolerance, and
a token is compared wherever NVIDIA's choice was decisive. NVIDIA's step j after the prompt is the
engine's step j (the first one, which takes no user audio, included); its user frame i is NVIDIA's.

The negative checks run the same comparisons on a session with one thing wrong (the prompt one
frame late, a codebook's delay changed, the voice embeddings one step off) and require them to fail.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import sphn
import torch
from moshi.models.lm import LMGen

from engine_helpers import GENERATED_FRAMES, GREEDY, run_session
from nvidia_golden import (GOLDEN_DIR, MIN_DECISIVE_CODES, MIN_DECISIVE_LOGITS, Golden, agreements,
                           codes_agreement, encode_with_latents, load_golden, nvidia_path_session)
from plexray.model import load_model
from plexray.model import voice_prefill
from plexray.model.prompt import FRAME_SAMPLES
from plexray.model.voices import VoicePrompt, encode_voice
from plexray.serve.engine import Engine, EngineConfig, SessionSettings

# Sessions that share the batch with the compared one: other prompts, voices, sampling, join times.
NEIGHBOURS = [SessionSettings(text_prompt="You sell umbrellas.", voice=None, text_seed=7, audio_seed=8),
              SessionSettings(text_prompt="", voice="NATF0", text_temperature=1.0, audio_topk=40, text_seed=9)]


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The comparisons hold whatever the kernels' split over threads (each rounds differently)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden() -> Golden:
    return load_golden()


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


def test_voices_make_writes_what_nvidia_writes(tmp_path, golden, monkeypatch):
    """`plexray voices make` on NATF0.wav writes NVIDIA's own NATF0.pt: same layout, same values.

    The voice's Mimi codes are NVIDIA's here (our encoder of this voice is compared on its own, in
    test_mimi_encodes_as_nvidia): what is checked is the prefill built from them.
    """
    from plexray.cli import main

    nvidia_codes = torch.tensor(golden.tokens["voice_codes"])
    monkeypatch.setattr(voice_prefill, "encode_voice", lambda mimi, samples: nvidia_codes)
    assert main(["voices", "make", str(GOLDEN_DIR / "voices" / "NATF0.wav"), "--checkpoint", str(GOLDEN_DIR),
                 "--dtype", "float32", "--output-dir", str(tmp_path)]) == 0
    ours = torch.load(tmp_path / "NATF0.pt", weights_only=True)
    nvidias = torch.load(GOLDEN_DIR / "voices" / "NATF0.pt", weights_only=True)
    assert set(ours) == set(nvidias) == {"embeddings", "cache"}
    assert ours["embeddings"].shape == nvidias["embeddings"].shape and ours["embeddings"].dim() == 4
    assert torch.equal(ours["cache"], nvidias["cache"])
    # Each embedding is a sum of 17 rows of the embedding tables: only the order of additions can differ.
    torch.testing.assert_close(ours["embeddings"], nvidias["embeddings"], rtol=0, atol=1e-6)
    with pytest.raises(AssertionError):  # the negative check: the same embeddings one step off
        torch.testing.assert_close(ours["embeddings"][1:], nvidias["embeddings"][:-1], rtol=0, atol=1e-6)
    written, _ = sphn.read(str(tmp_path / "NATF0.wav"))
    assert written.shape[1] == sphn.read(str(GOLDEN_DIR / "voices" / "NATF0.wav"))[0].shape[1]


@pytest.mark.parametrize("audio", ["user", "voice"])
def test_mimi_encodes_as_nvidia(bundles, golden, user_pcm, audio, threads):
    """Streaming Mimi, frame by frame as the engine and `voices make` encode: NVIDIA's latents, and
    NVIDIA's codes wherever its choice of codeword was decisive. The voice goes through plexray's
    loudness normalisation first (-24 LUFS, as NVIDIA's `load_voice_prompt`)."""
    mimi = bundles["wav"].mimi
    pcm = user_pcm if audio == "user" else VoicePrompt("NATF0", wav_path=GOLDEN_DIR / "voices" / "NATF0.wav").load_wav()
    golden_codes = np.asarray(golden.tokens["user_codes"]) if audio == "user" else np.asarray(golden.tokens["voice_codes"]).T
    latents, codes = encode_with_latents(mimi, pcm, encode_voice)
    codes_agreement(f"{audio} audio", latents, codes, golden.arrays[f"{audio}_latents"], golden_codes,
                    golden.arrays[f"{audio}_margins"]).check(MIN_DECISIVE_CODES)


# Every voice source alone and batched on one thread, and the hardest case (a batch) on two: 523 steps each
# (the 16 s voice's prompt and 22 s of user audio), so the whole matrix on both thread counts cost a minute.
@pytest.mark.parametrize("source, batched, threads", [("wav", False, 1), ("wav", True, 1), ("pt", False, 1),
                                                      ("pt", True, 1), ("wav", True, 2)],
                         ids=["wav-alone", "wav-batched", "pt-alone", "pt-batched", "wav-batched-2-threads"],
                         indirect=["threads"])
def test_engine_follows_nvidias_inference(bundles, golden, user_pcm, source, batched, threads):
    with Engine(bundles[source], EngineConfig(max_sessions=3 if batched else 1)) as engine:
        trace = nvidia_path_session(engine, golden, source, user_pcm, NEIGHBOURS if batched else [])
    # NVIDIA runs P - 1 transformer steps for a prompt of P frames: the engine as many.
    assert len(trace.prompt_tokens) == golden.tokens["sessions"][source]["prompt_steps"]
    for agreement in agreements(trace, golden, source):
        agreement.check(MIN_DECISIVE_LOGITS)


def _prompt_one_frame_late(engine: Engine) -> None:
    embed = engine._planner.embed

    def late(layout):
        plan = embed(layout)
        return dataclasses.replace(plan, embeddings=torch.cat([plan.embeddings[:1], plan.embeddings[:-1]]))

    engine._planner.embed = late


def _acoustic_delay_changed(engine: Engine) -> None:
    engine._lm.delays[3] -= 1  # agent codebook 2 with delay 0 instead of 1: read one column too new


def _voice_embeddings_one_step_off(engine: Engine) -> None:
    prefill = engine._planner._prefills["NATF0"]
    shifted = torch.cat([prefill.embeddings[1:], prefill.embeddings[-1:]])
    engine._planner._prefills["NATF0"] = dataclasses.replace(prefill, embeddings=shifted)


@pytest.mark.parametrize("fault", [_prompt_one_frame_late, _acoustic_delay_changed, _voice_embeddings_one_step_off],
                         ids=["prompt-shifted", "delay-changed", "voice-embeddings-off-by-one"])
def test_the_comparison_fails_on_a_real_difference(bundles, golden, user_pcm, fault):
    with Engine(bundles["pt"], EngineConfig(max_sessions=1)) as engine:
        fault(engine)
        trace = nvidia_path_session(engine, golden, "pt", user_pcm)
    failed = [agreement.what for agreement in agreements(trace, golden, "pt") if not agreement.holds]
    assert failed, "a session with a real fault passed the comparison with NVIDIA's run"


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
        trace = run_session(engine, SessionSettings(**GREEDY), user_pcm[FRAME_SAMPLES:],
                            NEIGHBOURS[:1] if batched else [], user_codes.T.tolist() if batched else None)
    assert trace.outputs == expected[:GENERATED_FRAMES]
