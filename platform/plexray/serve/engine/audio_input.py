"""Checking and repairing the audio a client pushes: the engine must never crash on it.

Repaired (and counted): non-finite samples -> 0, samples outside [-1, 1] -> clipped, integer PCM ->
scaled to [-1, 1], another sample rate -> resampled to 24 kHz, a [1, N] or [N, 1] array -> flattened.
Refused with BadAudioError (and counted): several channels, non-numeric data, an absurd rate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.engine.errors import BadAudioError

MIN_RATE, MAX_RATE = 4000, 384000


@dataclasses.dataclass
class AudioCounters:
    refused: int = 0  # push_pcm calls rejected with BadAudioError
    repaired: int = 0  # push_pcm calls whose audio was fixed up (see module docstring)
    nonfinite_samples: int = 0
    clipped_samples: int = 0
    resampled: int = 0


def clean_pcm(pcm, sample_rate: int, counters: AudioCounters) -> np.ndarray:
    """Return float32 mono samples at 24 kHz in [-1, 1], or raise BadAudioError (both counted)."""
    try:
        samples = _as_mono(pcm, sample_rate)
    except BadAudioError:
        counters.refused += 1
        raise
    repaired = False
    if samples.dtype.kind in "iu":
        scale = float(np.iinfo(samples.dtype).max) + 1.0
        samples = samples.astype(np.float32) / scale
        repaired = True
    samples = samples.astype(np.float32, copy=False)
    nonfinite = ~np.isfinite(samples)
    if nonfinite.any():
        counters.nonfinite_samples += int(nonfinite.sum())
        samples = np.where(nonfinite, np.float32(0), samples)
        repaired = True
    loud = np.abs(samples) > 1.0
    if loud.any():
        counters.clipped_samples += int(loud.sum())
        samples = np.clip(samples, -1.0, 1.0)
        repaired = True
    if sample_rate != SAMPLE_RATE:
        samples = _resample(samples, sample_rate)
        counters.resampled += 1
        repaired = True
    counters.repaired += int(repaired)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _as_mono(pcm, sample_rate) -> np.ndarray:
    if not isinstance(sample_rate, (int, np.integer)) or not MIN_RATE <= sample_rate <= MAX_RATE:
        raise BadAudioError(f"audio sample rate {sample_rate!r}: expected an integer in [{MIN_RATE}, {MAX_RATE}] Hz "
                            f"(the engine runs at {SAMPLE_RATE} Hz)")
    try:
        samples = np.asarray(pcm)
    except Exception as exc:  # noqa: BLE001 - any object may arrive from a client
        raise BadAudioError(f"audio is not an array of samples: {exc}") from None
    if samples.dtype.kind not in "fiu":
        raise BadAudioError(f"audio samples must be numbers (float or integer PCM), got dtype {samples.dtype}")
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise BadAudioError(f"audio must be mono, shape [N]; got shape {list(samples.shape)}")
    return samples


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Linear interpolation: enough for speech going into Mimi, and never fails."""
    if samples.size == 0:
        return samples
    duration = samples.size / rate
    target = np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE
    return np.interp(target, np.arange(samples.size) / rate, samples).astype(np.float32)
