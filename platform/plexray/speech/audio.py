"""Audio as the speech models want it: checked, mono float32 at 16 kHz.

Silero VAD, pocketsphinx's English model and Whisper all work at 16 kHz. Every caller's audio (24 kHz
from the model, 48 kHz from a browser) is resampled here, so no model ever reads samples at a rate it
does not assume (Full-Duplex-Bench fed 24 kHz audio to a 16 kHz VAD and stretched its times x1.5).
"""

from __future__ import annotations

import numpy as np
import soxr

from plexray.speech.errors import SpeechError

SPEECH_SAMPLE_RATE = 16000


def to_speech_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """`samples` ([N] float, any rate) checked and resampled: [M] float32 at 16 kHz, same duration.

    Raises SpeechError for audio that is not one-dimensional, empty, not finite, or has a bad rate.
    """
    if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise SpeechError(f"sample rate must be a positive integer (Hz), got {sample_rate!r}")
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise SpeechError(f"audio must be mono, shape [N]; got shape {list(samples.shape)} "
                          "(take one channel first, e.g. samples[0] of a [1, N] array)")
    if samples.size == 0:
        raise SpeechError("audio is empty (0 samples)")
    if not np.issubdtype(samples.dtype, np.floating):
        raise SpeechError(f"audio must be float samples in [-1, 1], got dtype {samples.dtype} "
                          "(divide int16 PCM by 32768)")
    if not np.all(np.isfinite(samples)):
        raise SpeechError(f"audio has {int(np.sum(~np.isfinite(samples)))} NaN or infinite samples")
    samples = samples.astype(np.float32, copy=False)
    if sample_rate == SPEECH_SAMPLE_RATE:
        return samples
    # soxr's filter is linear-phase with its delay removed: sample i of the output is at time i / 16 kHz.
    return soxr.resample(samples, int(sample_rate), SPEECH_SAMPLE_RATE).astype(np.float32, copy=False)
