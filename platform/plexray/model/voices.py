"""Voice prompts: a voice is a short agent speech sample (.wav) and/or its replayable prefill (.pt).

PersonaPlex ships `voices.tgz` with one `.pt` per voice (NATF0-3, NATM0-3, VARF0-4, VARM0-4):
`{"embeddings": [T, dim] transformer inputs, one per prompt frame, "cache": [17, K] token cache
after the prompt}`. A `.wav` is encoded by Mimi at session start instead.
"""

from __future__ import annotations

import dataclasses
import tarfile
from pathlib import Path

import numpy as np
import sphn
import torch

from plexray.errors import CheckpointError
from plexray.model.prompt import SAMPLE_RATE

TARGET_LOUDNESS_DB = -24.0  # voice samples are normalised to this level before encoding


@dataclasses.dataclass
class VoicePrompt:
    name: str
    wav_path: Path | None = None
    pt_path: Path | None = None

    def load_wav(self) -> np.ndarray:
        """Mono float32 samples at 24 kHz, loudness-normalised."""
        if self.wav_path is None:
            raise CheckpointError(f"voice {self.name!r} has no .wav sample")
        return normalize_loudness(read_mono(self.wav_path))

    def load_embeddings(self) -> dict[str, torch.Tensor]:
        """The `.pt` prefill: {"embeddings": [T, dim], "cache": [17, K]}."""
        if self.pt_path is None:
            raise CheckpointError(f"voice {self.name!r} has no .pt prefill")
        try:
            data = torch.load(self.pt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad pickle/zip
            raise CheckpointError(f"{self.pt_path}: cannot read voice prompt: {exc}") from None
        if not isinstance(data, dict) or "embeddings" not in data or "cache" not in data:
            raise CheckpointError(f"{self.pt_path}: expected a dict with 'embeddings' and 'cache'")
        return data


def read_mono(path: Path) -> np.ndarray:
    """Read any audio file sphn can decode as mono float32 at 24 kHz."""
    try:
        pcm, _ = sphn.read(str(path), sample_rate=SAMPLE_RATE)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read audio: {exc}") from None
    return np.asarray(pcm, dtype=np.float32).mean(axis=0)


def normalize_loudness(samples: np.ndarray, target_db: float = TARGET_LOUDNESS_DB) -> np.ndarray:
    """Scale to an RMS level of `target_db` dBFS (a stand-in for LUFS without K-weighting), no clipping."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    if rms < 1e-6:
        return samples.astype(np.float32)
    gain = 10 ** (target_db / 20) / rms
    peak = float(np.max(np.abs(samples))) * gain
    if peak > 0.99:
        gain *= 0.99 / peak
    return (samples * gain).astype(np.float32)


def discover_voices(location: Path | None) -> dict[str, VoicePrompt]:
    """Voices from a `voices.tgz` (extracted once beside it) or a directory of .wav/.pt files."""
    if location is None:
        return {}
    if location.is_file():
        location = _extract_archive(location)
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


def _extract_archive(archive: Path) -> Path:
    target = archive.with_name(archive.name + ".extracted")
    marker = target / ".complete"
    if marker.exists():
        return target
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise CheckpointError(f"{archive}: cannot extract voices archive: {exc}") from None
    marker.touch()
    return target
