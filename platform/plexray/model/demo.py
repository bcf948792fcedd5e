"""The built-in demo checkpoint: randomly initialised, real architecture, real file layout.

It exists so that every part of plexray (data, training, serving, the demo) runs for real on a
laptop without downloading 16 GB of weights. Its speech is noise and its text is gibberish: it
is for exercising the platform, never for judging quality. The files have the names and tensor
key layout of `nvidia/personaplex-7b-v1`, so it loads through the same code as the real model.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import safetensors.torch
import sentencepiece
import sphn
import torch

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.model import architectures, layout
from plexray.model.prompt import SAMPLE_RATE, PromptCodes, derive_prompt_codes
from plexray.model.voice_prefill import make_voice_prefill, write_voice_prefill
from plexray.model.voices import encode_voice, normalize_loudness
from moshi.models import loaders
from moshi.utils.compile import no_compile

CORPUS = Path(__file__).resolve().parent.parent / "assets" / "tokenizer_corpus.txt"
DEMO_TEXT_VOCAB = 512
DEMO_SEED = 1234
# A few of the real voice names, each a distinct espeak-ng voice.
DEMO_VOICES = {
    "NATF0": EspeakVoice(variant="f3", pitch=62, speed=160),
    "NATM0": EspeakVoice(variant="m3", pitch=40, speed=160),
    "VARF0": EspeakVoice(variant="f5", pitch=70, speed=175),
    "VARM0": EspeakVoice(variant="m7", pitch=30, speed=150),
}
VOICE_SAMPLE_TEXT = "Hello, thanks for calling. I'm happy to help you with anything you need today."
README = """# plexray demo checkpoint ({family})

Randomly initialised, with the real PersonaPlex/Moshi architecture at toy sizes and the exact
file names and tensor key layout of the real Hugging Face repo. It exists so that data
generation, training, serving and the tests run for real on a CPU. Its audio is noise and its
text is meaningless: never use it to judge quality. Built by `plexray model init-demo`.
"""


def train_tokenizer(output_model: Path, vocab_size: int = DEMO_TEXT_VOCAB) -> None:
    """SentencePiece on the shipped corpus, with Moshi's special ids: 0 end-of-padding, 3 padding."""
    prefix = output_model.with_suffix("")
    sentencepiece.SentencePieceTrainer.train(
        input=str(CORPUS), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, character_coverage=1.0, num_threads=1, minloglevel=2,
    )
    prefix.with_suffix(".model").rename(output_model)
    prefix.with_suffix(".vocab").unlink()


def build_demo_mimi(seed: int = DEMO_SEED):
    """A toy Mimi whose codebooks are drawn from its own latents of real (espeak) speech.

    A fresh Mimi has all-zero codebooks (every frame would quantise to code 0); seeding each
    residual codebook with latent vectors of speech makes codes vary with the audio, as real ones do.
    """
    torch.manual_seed(seed)
    mimi = loaders.get_mimi(None, architectures.demo_mimi_config(), device="cpu",
                            num_codebooks=architectures.NUM_AUDIO_CODEBOOKS)
    speech = np.concatenate([synthesize(VOICE_SAMPLE_TEXT, voice) for voice in DEMO_VOICES.values()])
    with torch.no_grad():
        latent = mimi._encode_to_unquantized_latent(torch.from_numpy(speech)[None, None])  # [1, D, T]
        generator = torch.Generator().manual_seed(seed)
        for rvq in (mimi.quantizer.rvq_first, mimi.quantizer.rvq_rest):
            residual = rvq.input_proj(latent)[0].T  # [T, d]
            for vq_layer in rvq.vq.layers:
                codebook = vq_layer._codebook
                picks = torch.randint(len(residual), (codebook.codebook_size,), generator=generator)
                noise = 0.1 * residual.std() * torch.randn(codebook.codebook_size, residual.shape[1],
                                                           generator=generator)
                codebook.embedding_sum.copy_(residual[picks] + noise)
                codebook.cluster_usage.fill_(1.0)
                codebook._initialized.fill_(1.0)
                codebook._embedding = None
                codebook._cached_initialized = False
                nearest = torch.cdist(residual, codebook.embedding).argmin(dim=1)
                residual = residual - codebook.embedding[nearest]
    return mimi.eval()


def init_demo(directory: Path, family: str = "personaplex", seed: int = DEMO_SEED) -> Path:
    """Write a demo checkpoint into `directory` (created; must not exist or be empty)."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory}: not empty; choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    with no_compile():  # a toy model: compiling it costs more than it saves (and the switch is the loader's)
        _write_demo(directory, family, seed)
    return directory


def _write_demo(directory: Path, family: str, seed: int) -> None:
    train_tokenizer(directory / layout.TOKENIZER_FILE)
    mimi = build_demo_mimi(seed)
    safetensors.torch.save_file(mimi.state_dict(), str(directory / layout.MIMI_FILE))
    prompt_codes = derive_prompt_codes(mimi)

    torch.manual_seed(seed)
    lm_kwargs = architectures.demo_lm_kwargs(family, text_card=DEMO_TEXT_VOCAB)
    lm = architectures.build_lm(lm_kwargs, device="cpu", dtype=torch.float32).eval()
    release_state = {k: v.contiguous() for k, v in layout.to_release_layout(lm.state_dict()).items()}
    safetensors.torch.save_file(release_state, str(directory / layout.LM_FILE))

    _write_voices(directory / layout.VOICES_FILE, lm, mimi, prompt_codes)
    metadata = {"family": family, "demo": True, "lora": False,
                "mimi_config": architectures.demo_mimi_config(), "prompt_codes": prompt_codes.to_json()}
    (directory / layout.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    # config.json as moshi's loaders read it (LMModel arguments and model_type only), written last:
    # its presence marks a complete checkpoint.
    config = dict(lm_kwargs, model_type="moshi")
    (directory / layout.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (directory / "README.md").write_text(README.format(family=family))


def _write_voices(archive: Path, lm, mimi, prompt_codes: PromptCodes) -> None:
    """voices.tgz as NVIDIA ships it (voices/NAME.pt in NVIDIA's layout), plus each normalised sample as .wav."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive, "w:gz") as tar:
        for name, voice in DEMO_VOICES.items():
            samples = normalize_loudness(synthesize(VOICE_SAMPLE_TEXT, voice))
            wav_path, pt_path = Path(tmp) / f"{name}.wav", Path(tmp) / f"{name}.pt"
            sphn.write_wav(str(wav_path), samples, SAMPLE_RATE)
            write_voice_prefill(pt_path, make_voice_prefill(lm, encode_voice(mimi, samples), prompt_codes))
            for path in (wav_path, pt_path):
                tar.add(path, arcname=f"{layout.VOICES_DIR}/{path.name}")


def ensure_demo_checkpoint(directory: Path, family: str = "personaplex") -> Path:
    """Build the demo checkpoint at `directory` unless it is already complete (safe under races)."""
    directory = Path(directory)
    if (directory / layout.CONFIG_FILE).is_file():
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=directory.parent))
    try:
        init_demo(staging / "ckpt", family=family)
        try:
            os.rename(staging / "ckpt", directory)
        except OSError:
            if not (directory / layout.CONFIG_FILE).is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
