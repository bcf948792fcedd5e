"""Voice prompts: where a checkpoint's voices are, and how a voice sample becomes Mimi codes.

A voice is a short sample of the agent's speech. PersonaPlex ships `voices.tgz` with one `.pt`
per voice (NATF0-3, NATM0-3, VARF0-4, VARM0-4) in NVIDIA's prefill layout (see
`voice_prefill.py`); a `.wav` works too and is encoded by Mimi when the engine starts.

A `.wav` becomes codes exactly as NVIDIA's `LMGen.load_voice_prompt` and
`_encode_voice_prompt_frames` do it: first channel, resampled to 24 kHz, normalised to -24 LUFS
(ITU-R BS.1770 integrated loudness, measured by pyloudnorm as NVIDIA does), cut into 1920-sample
frames (the last one zero-padded) and encoded one frame at a time by Mimi in streaming mode.
Encoding the whole sample at once gives other codes at the edges of Mimi's receptive field.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pyloudnorm
import sphn
import torch

from plexray.errors import CheckpointError
from plexray.model.archives import extract_once
from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE

TARGET_LOUDNESS_LUFS = -24.0
_LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block: pyloudnorm measures nothing shorter


@dataclasses.dataclass
class VoicePrompt:
    """One voice of a checkpoint: its sample (.wav) and/or its NVIDIA prefill (.pt)."""

    name: str
    wav_path: Path | None = None
    pt_path: Path | None = None

    def load_wav(self) -> np.ndarray:
        """Mono float32 samples at 24 kHz, normalised to -24 LUFS."""
        if self.wav_path is None:
            raise CheckpointError(f"voice {self.name!r} has no .wav sample")
        return normalize_loudness(read_voice_audio(self.wav_path))


def read_voice_audio(path: Path) -> np.ndarray:
    """The first channel of any audio file sphn decodes, resampled to 24 kHz (as NVIDIA reads voices)."""
    try:
        pcm, sample_rate = sphn.read(str(path))
        if sample_rate != SAMPLE_RATE:
            pcm = sphn.resample(pcm, src_sample_rate=sample_rate, dst_sample_rate=SAMPLE_RATE)
    except Exception as exc:  # sphn raises its own error types for unreadable files
        raise CheckpointError(f"{path}: cannot read audio: {exc}") from None
    pcm = np.asarray(pcm, dtype=np.float32)
    if pcm.ndim != 2 or pcm.shape[1] == 0:
        raise CheckpointError(f"{path}: no audio samples")
    return pcm[0]


def normalize_loudness(samples: np.ndarray, target_lufs: float = TARGET_LOUDNESS_LUFS) -> np.ndarray:
    """Scale mono 24 kHz `samples` to an integrated loudness of `target_lufs` (no limiter, as NVIDIA).

    Silence is returned unchanged. A clip shorter than one 0.4 s gating block (a backchannel in
    the training data) is measured on itself repeated to that length.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if not samples.size or not np.any(samples):
        return samples
    measured = samples
    block = int(_LOUDNESS_BLOCK_S * SAMPLE_RATE)
    if measured.size <= block:
        measured = np.tile(measured, block // measured.size + 1)
    loudness = pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(measured)
    if not np.isfinite(loudness):  # everything below the absolute gate: nothing to scale to
        return samples
    with warnings.catch_warnings():  # it warns of peaks over 0 dBFS; NVIDIA keeps them too (no limiter)
        warnings.simplefilter("ignore")
        # The gain is applied in float64, as in NVIDIA's path: float32 rounding here moves Mimi codes.
        return pyloudnorm.normalize.loudness(samples, loudness, target_lufs).astype(np.float32)


@torch.no_grad()
def encode_voice(mimi, samples: np.ndarray) -> torch.Tensor:
    """Mimi codes [8, V] of a (normalised) voice sample, frame by frame in streaming mode."""
    num_frames = max(1, -(-len(samples) // FRAME_SAMPLES))
    padded = np.zeros(num_frames * FRAME_SAMPLES, np.float32)
    padded[:len(samples)] = samples
    device = next(mimi.parameters()).device
    frames = torch.from_numpy(padded).to(device).view(num_frames, 1, 1, FRAME_SAMPLES)
    with mimi.streaming(1):
        codes = [mimi.encode(frame)[0, :, 0] for frame in frames]  # each [8]
    return torch.stack(codes, dim=1).cpu()


def discover_voices(location: Path | None) -> dict[str, VoicePrompt]:
    """Voices from a `voices.tgz` (extracted once beside it) or a directory of .wav/.pt files."""
    if location is None:
        return {}
    if location.is_file():
        location = extract_once(location, "voices archive")
    voices: dict[str, VoicePrompt] = {}
    for path in sorted(location.rglob("*")):
        if path.suffix not in (".wav", ".pt"):
            continue
        voice = voices.setdefault(path.stem, VoicePrompt(path.stem))
        if path.suffix == ".wav":
            voice.wav_path = path
        else:
            voice.pt_path = path
    return voices
