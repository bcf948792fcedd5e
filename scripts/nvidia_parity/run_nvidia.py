"""Run NVIDIA's own PersonaPlex inference on the toy checkpoint and write the golden token files.

    PYTHONPATH=$PERSONAPLEX/moshi .venv/bin/python scripts/nvidia_parity/run_nvidia.py tests/golden/personaplex-toy

$PERSONAPLEX is a checkout of NVIDIA/personaplex; PYTHONPATH makes its moshi fork (0.1.0, the
package NVIDIA's server and offline.py import) shadow PyPI's moshi. This script imports nothing
from plexray: it drives NVIDIA's `LMGen` exactly as NVIDIA's `offline.py` does (voice prompt,
0.5 s silence, text prompt, 0.5 s silence, then the user's audio frame by frame), greedily, in
float32 on one CPU thread, and records:

- voices/NATF0.pt: written by NVIDIA's own `save_voice_prompt_embeddings` path from NATF0.wav;
- user.wav: a deterministic user signal, and the Mimi codes NVIDIA's streaming encoder gives it;
- golden.json, per voice source ("wav": NATF0.wav encoded at session start, "pt": the replayed
  NATF0.pt): the greedy text token of every prompt step (argmax of the text logits each time the
  temporal transformer runs) and the tokens LMGen returns for each user frame (text + 8 agent
  codebooks).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import sentencepiece
import sphn
import torch

import moshi
from moshi.models.compression import MimiModel
from moshi.models.lm import LMGen, LMModel
from moshi.modules import SEANetDecoder, SEANetEncoder, transformer
from moshi.quantization import SplitResidualVectorQuantizer

TEXT_PROMPT = "You are a calm support agent. Your name is Ada."
VOICE = "NATF0"
USER_FRAMES = 101  # LMGen's first output is the last prompt frame, then 100 generated frames
SAMPLE_RATE, FRAME_RATE = 24000, 12.5
FRAME = 1920
# Keys of config.json that are not LMModel arguments.
NOT_LM_ARGUMENTS = {"model_type"}


def user_signal() -> np.ndarray:
    """A deterministic speech-band signal: a rising chirp with a 2 Hz syllable-like envelope."""
    t = np.arange(USER_FRAMES * FRAME) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.0 * t)
    return (0.3 * envelope * np.sin(2 * np.pi * (150 * t + 20 * t * t))).astype(np.float32)


def load_mimi(directory: Path) -> MimiModel:
    """NVIDIA's `loaders.get_mimi`, with the toy sizes of the checkpoint's Mimi config."""
    mimi_config = json.loads((directory / "plexray.json").read_text())["mimi_config"]
    seanet = mimi_config["seanet"]
    encoder, decoder = SEANetEncoder(**seanet), SEANetDecoder(**seanet)
    encoder_transformer = transformer.ProjectedTransformer(device="cpu", **mimi_config["transformer"])
    decoder_transformer = transformer.ProjectedTransformer(device="cpu", **mimi_config["transformer"])
    quantizer = SplitResidualVectorQuantizer(**mimi_config["quantizer"])
    mimi = MimiModel(encoder, decoder, quantizer, channels=1, sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE,
                     encoder_frame_rate=SAMPLE_RATE / encoder.hop_length, causal=True, resample_method="conv",
                     encoder_transformer=encoder_transformer, decoder_transformer=decoder_transformer)
    safetensors.torch.load_model(mimi, str(directory / "tokenizer-e351c8d8-checkpoint125.safetensors"))
    mimi.set_num_codebooks(8)
    return mimi.eval()


def load_lm(directory: Path, config: dict) -> LMModel:
    kwargs = {key: value for key, value in config.items() if key not in NOT_LM_ARGUMENTS}
    lm = LMModel(device="cpu", dtype=torch.float32, **kwargs)
    state = safetensors.torch.load_file(str(directory / "model.safetensors"))
    lm.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    return lm.eval()


def run_session(lm, mimi, tokenizer, voice_path: Path, user_pcm: np.ndarray, save_pt: bool) -> dict:
    """offline.py's `run_inference`, greedy, recording tokens instead of audio."""
    text_argmax: list[int] = []
    hook = lm.text_linear.register_forward_hook(
        lambda module, inputs, output: text_argmax.append(int(output.reshape(-1).argmax())))
    lm_gen = LMGen(lm, device="cpu", use_sampling=False, audio_silence_frame_cnt=int(0.5 * FRAME_RATE),
                   sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, save_voice_prompt_embeddings=save_pt)
    mimi.streaming_forever(1)
    lm_gen.streaming_forever(1)
    if voice_path.suffix == ".pt":
        lm_gen.load_voice_prompt_embeddings(str(voice_path))
    else:
        lm_gen.load_voice_prompt(str(voice_path))
    lm_gen.text_prompt_tokens = tokenizer.encode(f"<system> {TEXT_PROMPT} <system>")
    mimi.reset_streaming()
    lm_gen.reset_streaming()
    lm_gen.step_system_prompts(mimi)
    mimi.reset_streaming()
    prompt_steps = len(text_argmax)

    user_codes, outputs = [], []
    for index in range(USER_FRAMES):
        frame = torch.from_numpy(user_pcm[index * FRAME:(index + 1) * FRAME])[None, None]
        codes = mimi.encode(frame)  # [1, 8, 1]
        user_codes.append(codes[0, :, 0].tolist())
        tokens = lm_gen.step(codes)
        if tokens is not None:
            outputs.append(tokens[0, :9, 0].tolist())
    hook.remove()
    return {"prompt_steps": prompt_steps, "prompt_text_argmax": text_argmax[:prompt_steps],
            "user_codes": user_codes, "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--personaplex-commit", default=None,
                        help="the NVIDIA/personaplex commit on PYTHONPATH (default: asked of git there)")
    directory = parser.parse_args().directory
    if not hasattr(LMGen, "load_voice_prompt_embeddings"):
        sys.exit(f"the moshi on PYTHONPATH ({moshi.__file__}) is not NVIDIA's PersonaPlex fork")
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    # One thread: kernels split over several threads round differently, and the toy Mimi's near-tied
    # codes flip with the last bit. The parity tests run single-threaded too (any machine, any cores).
    torch.set_num_threads(1)

    config = json.loads((directory / "config.json").read_text())
    lm, mimi = load_lm(directory, config), load_mimi(directory)
    tokenizer = sentencepiece.SentencePieceProcessor(str(directory / "tokenizer_spm_32k_3.model"))
    sphn.write_wav(str(directory / "user.wav"), user_signal(), SAMPLE_RATE)
    user_pcm = sphn.read(str(directory / "user.wav"))[0][0].astype(np.float32)  # what both sides read back

    voices = directory / "voices"
    with_wav = run_session(lm, mimi, tokenizer, voices / f"{VOICE}.wav", user_pcm, save_pt=True)
    with_pt = run_session(lm, mimi, tokenizer, voices / f"{VOICE}.pt", user_pcm, save_pt=False)
    assert with_wav["user_codes"] == with_pt["user_codes"]

    commit = parser.parse_args().personaplex_commit or _git_commit(Path(moshi.__file__).parent)
    golden = {
        "made_by": "scripts/nvidia_parity/run_nvidia.py", "nvidia_personaplex_commit": commit,
        "moshi_fork_version": moshi.__version__, "torch": torch.__version__,
        "text_prompt": TEXT_PROMPT, "voice": VOICE, "user_frames": USER_FRAMES,
        "user_codes": with_wav.pop("user_codes"), "sessions": {"wav": with_wav, "pt": with_pt},
    }
    del with_pt["user_codes"]
    (directory / "golden.json").write_text(json.dumps(golden))
    print(f"wrote {directory / 'golden.json'}: prompt steps {with_wav['prompt_steps']} (wav) / "
          f"{with_pt['prompt_steps']} (pt), {len(with_wav['outputs'])} outputs")


def _git_commit(path: Path) -> str:
    if shutil.which("git") is None:
        return "unknown"
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
