"""Checking and repairing the audio a client pushes: the engine must never crash on it.

Repaired (and counted): non-finite samples -> 0, samples outside [-1, 1] -> clipped, integer PCM ->
scaled to [-1, 1] (signed: full scale 2**(bits-1); unsigned: silence at the midpoint), another sample
rate -> resampled to 24 kHz, a [1, N] or [N, 1] array -> flattened.
Refused with BadAudioError (and counted): several channels, non-numeric data, an absurd rate.

Resampling is soxr's (band-limited, so nothing above 12 kHz folds back into the speech band). A client
stream arriving in chunks goes through a StreamResampler, whose filter state carries from one chunk
to the next; without one, each call is resampled as a whole clip.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import soxr

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


class StreamResampler:
    """One client's audio stream -> 24 kHz, chunk after chunk, with the filter state kept in between."""

    def __init__(self) -> None:
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None

    def resample(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """float32 samples at `rate` -> float32 at 24 kHz (the first call holds back the filter's delay)."""
        tail = np.zeros(0, np.float32)
        if rate != self._rate:  # the client changed its rate: finish the old stream, start a new one
            if self._stream is not None:
                tail = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
            self._rate, self._stream = rate, soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        assert self._stream is not None
        resampled = self._stream.resample_chunk(samples)
        return np.concatenate([tail, resampled]) if tail.size else resampled


def clean_pcm(pcm, sample_rate: int, counters: AudioCounters, resampler: StreamResampler | None = None
              ) -> np.ndarray:
    """Return float32 mono samples at 24 kHz in [-1, 1], or raise BadAudioError (both counted).

    `resampler`: the stream these samples continue, when they are one chunk of it.
    """
    try:
        samples = _as_mono(pcm, sample_rate)
    except BadAudioError:
        counters.refused += 1
        raise
    repaired = False
    if samples.dtype.kind in "iu":
        samples = _integer_pcm_to_float(samples)
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
        if resampler is not None:
            samples = resampler.resample(samples, int(sample_rate))
        else:
            samples = soxr.resample(samples, int(sample_rate), SAMPLE_RATE).astype(np.float32, copy=False)
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


def _integer_pcm_to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM -> float in [-1, 1): signed full scale is 2**(bits-1); unsigned PCM (8-bit WAV) is
    offset binary, silence at 2**(bits-1)."""
    half_range = 2.0 ** (8 * samples.dtype.itemsize - 1)
    centred = samples.astype(np.float64) - (half_range if samples.dtype.kind == "u" else 0.0)
    return (centred / half_range).astype(np.float32)
