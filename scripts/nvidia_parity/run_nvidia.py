"""Run NVIDIA's own PersonaPlex inference on the toy checkpoint and write the golden files.

    PYTHONPATH=$PERSONAPLEX/moshi .venv/bin/python scripts/nvidia_parity/run_nvidia.py tests/golden/personaplex-toy

$PERSONAPLEX is a checkout of NVIDIA/personaplex; PYTHONPATH makes its moshi fork (0.1.0, the
package NVIDIA's server and offline.py import) shadow PyPI's moshi. This script imports nothing
from plexray: it drives NVIDIA's `LMGen` exactly as NVIDIA's `offline.py` does (voice prompt,
0.5 s silence, text prompt, 0.5 s silence, then the user's audio frame by frame), greedily, in
float32 on one CPU thread, and records what a comparison on ANY CPU can use:

- voices/NATF0.pt: written by NVIDIA's own `save_voice_prompt_embeddings` path from NATF0.wav;
- user.wav: a deterministic user signal;
- golden.json: tokens (Mimi codes of the user's audio and of the voice; per voice source, the
  greedy tokens of every step) and metadata;
- golden.npz: the numbers behind those tokens, so that tokens are only compared where they are
  decisive. Mimi: the latent each frame had before quantisation, and per codebook the margin
  between the nearest and the second-nearest codeword along NVIDIA's own residual path. LM: at
  every temporal step the text logits, and at every generated step the 8 agent depformer
  logits, each as its top TOP_K (indices and values) along NVIDIA's own greedy token path.

A float32 kernel on another instruction set rounds differently in the last bits; on this toy
model, where many logits and codewords are near-tied, a greedy token then flips and the whole
sequence cascades. The parity tests therefore replay NVIDIA's tokens (teacher forcing), compare
logits and latents within a tolerance, and compare tokens only where these margins exceed it.
"""

from __future__ import annotations

import argparse
import contextlib
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
import moshi.models.lm as nvidia_lm
from moshi.models.compression import MimiModel
from moshi.models.lm import LMGen, LMModel
from moshi.modules import SEANetDecoder, SEANetEncoder, transformer
from moshi.quantization import SplitResidualVectorQuantizer
from moshi.quantization.core_vq import EuclideanCodebook

TEXT_PROMPT = "You are a calm support agent. Your name is Ada."
VOICE = "NATF0"
# 22 s of user audio, past Mimi's 10 s streaming window (frame 124), where moshi 0.1 and 0.2 differ.
USER_FRAMES = 276  # LMGen's first output is the last prompt frame, then 275 generated frames
SAMPLE_RATE, FRAME_RATE = 24000, 12.5
FRAME = 1920
AGENT_CODEBOOKS = 8
TOP_K = 8  # logits kept per step and stream: enough to see the margin and the neighbours of the argmax
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


class Recorder:
    """Records, while active, what NVIDIA's code computes on its way to each token.

    - every `sample_token` call of LMGen (text, then the depformer's dep_q codebooks, per
      temporal step): the logits it sampled from;
    - every Mimi encode: the latent before quantisation [D] and, per codebook, the distance
      margin between the chosen codeword and the next nearest (`EuclideanCodebook._quantize`
      runs once per codebook, in order, on the residual NVIDIA's own choices left).
    """

    def __init__(self, mimi: MimiModel):
        self.logits: list[torch.Tensor] = []
        self.latents: list[torch.Tensor] = []
        self.codes: list[list[int]] = []
        self.margins: list[float] = []
        self._mimi = mimi

    @contextlib.contextmanager
    def active(self):
        sample_token, quantize = nvidia_lm.sample_token, EuclideanCodebook._quantize
        quantizer_encode = self._mimi.quantizer.encode

        def recording_sample_token(logits, *args, **kwargs):
            self.logits.append(logits.reshape(-1).float().clone())
            return sample_token(logits, *args, **kwargs)

        def recording_quantize(codebook, x):
            distances = torch.cdist(x[None], codebook.embedding[None], p=2)[0]  # as _quantize computes them
            nearest = distances.topk(2, dim=-1, largest=False).values  # [N, 2]
            self.margins.extend((nearest[:, 1] - nearest[:, 0]).tolist())
            return quantize(codebook, x)

        def recording_encode(x):
            codes = quantizer_encode(x)  # [1, 8, 1]
            self.latents.append(x[0, :, 0].float().clone())  # [D] of one frame, batch 1
            self.codes.append(codes[0, :, 0].tolist())
            return codes

        nvidia_lm.sample_token, EuclideanCodebook._quantize = recording_sample_token, recording_quantize
        self._mimi.quantizer.encode = recording_encode
        try:
            yield self
        finally:
            nvidia_lm.sample_token, EuclideanCodebook._quantize = sample_token, quantize
            self._mimi.quantizer.encode = quantizer_encode

    def take_mimi(self) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """Latents [F, D], margins [F, 8] and codes [F][8] of the frames encoded since the last call."""
        latents = torch.stack(self.latents).numpy()
        margins = np.asarray(self.margins, np.float32).reshape(len(self.latents), AGENT_CODEBOOKS)
        codes = self.codes
        self.latents, self.margins, self.codes = [], [], []
        return latents, margins, codes

    def take_steps(self, streams_per_step: int) -> list[list[torch.Tensor]]:
        """The recorded logits grouped per temporal step: [text, codebook 0, ..., codebook dep_q - 1]."""
        calls, self.logits = self.logits, []
        assert len(calls) % streams_per_step == 0, (len(calls), streams_per_step)
        return [calls[i:i + streams_per_step] for i in range(0, len(calls), streams_per_step)]


def top_k(logits: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values [N, TOP_K] of the largest logits of each row, in decreasing order."""
    values, indices = torch.stack(logits).topk(TOP_K, dim=-1)
    return indices.numpy().astype(np.int32), values.numpy()


def run_session(lm, mimi, tokenizer, voice_path: Path, user_pcm: np.ndarray, save_pt: bool) -> tuple[dict, dict]:
    """offline.py's `run_inference`, greedy, recording tokens (JSON) and the numbers behind them (arrays)."""
    recorder = Recorder(mimi)
    streams_per_step = 1 + lm.dep_q
    lm_gen = LMGen(lm, device="cpu", use_sampling=False, audio_silence_frame_cnt=int(0.5 * FRAME_RATE),
                   sample_rate=SAMPLE_RATE, frame_rate=FRAME_RATE, save_voice_prompt_embeddings=save_pt)
    mimi.streaming_forever(1)
    lm_gen.streaming_forever(1)
    tokens, arrays = {}, {}
    with recorder.active():
        if voice_path.suffix == ".pt":
            lm_gen.load_voice_prompt_embeddings(str(voice_path))
        else:
            lm_gen.load_voice_prompt(str(voice_path))
        lm_gen.text_prompt_tokens = tokenizer.encode(f"<system> {TEXT_PROMPT} <system>")
        mimi.reset_streaming()
        lm_gen.reset_streaming()
        lm_gen.step_system_prompts(mimi)  # encodes a .wav voice frame by frame, then steps the prompt
        if voice_path.suffix == ".wav":
            voice_latents, voice_margins, voice_codes = recorder.take_mimi()
            arrays |= {"voice_latents": voice_latents, "voice_margins": voice_margins}
            tokens["voice_codes"] = np.asarray(voice_codes).T.tolist()  # [8][V], as LMGen's prompt got them
        mimi.reset_streaming()
        prompt_steps = recorder.take_steps(streams_per_step)
        arrays["prompt_text_top"] = top_k([step[0] for step in prompt_steps])

        user_codes, outputs = [], []
        for index in range(USER_FRAMES):
            frame = torch.from_numpy(user_pcm[index * FRAME:(index + 1) * FRAME])[None, None]
            codes = mimi.encode(frame)  # [1, 8, 1]
            user_codes.append(codes[0, :, 0].tolist())
            step_tokens = lm_gen.step(codes)
            if step_tokens is not None:
                outputs.append(step_tokens[0, :9, 0].tolist())
        user_latents, user_margins, recorded_user_codes = recorder.take_mimi()
        assert recorded_user_codes == user_codes
        generated = recorder.take_steps(streams_per_step)
    # The greedy path: the argmax of every logit vector NVIDIA sampled from (text + 8 agent codebooks).
    path = [[int(logits.argmax()) for logits in step[:1 + AGENT_CODEBOOKS]] for step in generated]
    audio_indices, audio_values = top_k([logits for step in generated for logits in step[1:1 + AGENT_CODEBOOKS]])
    arrays |= {"generated_text_top": top_k([step[0] for step in generated]),
               "generated_audio_top": (audio_indices.reshape(len(generated), AGENT_CODEBOOKS, TOP_K),
                                       audio_values.reshape(len(generated), AGENT_CODEBOOKS, TOP_K)),
               "user_latents": user_latents, "user_margins": user_margins}
    tokens |= {"prompt_steps": len(prompt_steps), "prompt_text_argmax": arrays["prompt_text_top"][0][:, 0].tolist(),
               "generated_path": path, "user_codes": user_codes, "outputs": outputs}
    return tokens, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--personaplex-commit", default=None,
                        help="the NVIDIA/personaplex commit on PYTHONPATH (default: asked of git there)")
    args = parser.parse_args()
    directory = args.directory
    if not hasattr(LMGen, "load_voice_prompt_embeddings"):
        sys.exit(f"the moshi on PYTHONPATH ({moshi.__file__}) is not NVIDIA's PersonaPlex fork")
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one CPU thread: the reference run is reproducible on this machine

    config = json.loads((directory / "config.json").read_text())
    lm, mimi = load_lm(directory, config), load_mimi(directory)
    tokenizer = sentencepiece.SentencePieceProcessor(str(directory / "tokenizer_spm_32k_3.model"))
    sphn.write_wav(str(directory / "user.wav"), user_signal(), SAMPLE_RATE)
    user_pcm = sphn.read(str(directory / "user.wav"))[0][0].astype(np.float32)  # what both sides read back

    voices = directory / "voices"
    with_wav, wav_arrays = run_session(lm, mimi, tokenizer, voices / f"{VOICE}.wav", user_pcm, save_pt=True)
    with_pt, pt_arrays = run_session(lm, mimi, tokenizer, voices / f"{VOICE}.pt", user_pcm, save_pt=False)
    assert with_wav["user_codes"] == with_pt["user_codes"]
    del with_pt["user_codes"]

    arrays = {"user_latents": wav_arrays.pop("user_latents"), "user_margins": wav_arrays.pop("user_margins"),
              "voice_latents": wav_arrays.pop("voice_latents"), "voice_margins": wav_arrays.pop("voice_margins")}
    for source, session_arrays in (("wav", wav_arrays), ("pt", pt_arrays)):
        arrays[f"{source}_prompt_text_top_indices"], arrays[f"{source}_prompt_text_top_values"] = \
            session_arrays["prompt_text_top"]
        for part in ("text", "audio"):
            arrays[f"{source}_generated_{part}_top_indices"], arrays[f"{source}_generated_{part}_top_values"] = \
                session_arrays[f"generated_{part}_top"]
    np.savez_compressed(directory / "golden.npz", **arrays)

    commit = args.personaplex_commit or _git_commit(Path(moshi.__file__).parent)
    golden = {
        "made_by": "scripts/nvidia_parity/run_nvidia.py", "nvidia_personaplex_commit": commit,
        "moshi_fork_version": moshi.__version__, "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "text_prompt": TEXT_PROMPT, "voice": VOICE, "user_frames": USER_FRAMES, "top_k": TOP_K,
        "user_codes": with_wav.pop("user_codes"), "voice_codes": with_wav.pop("voice_codes"),
        "sessions": {"wav": with_wav, "pt": with_pt},
    }
    (directory / "golden.json").write_text(json.dumps(golden))
    print(f"wrote {directory / 'golden.json'} and golden.npz: prompt steps {with_wav['prompt_steps']} (wav) / "
          f"{with_pt['prompt_steps']} (pt), {len(with_wav['outputs'])} outputs")


def _git_commit(path: Path) -> str:
    if shutil.which("git") is None:
        return "unknown"
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
