"""Client audio -> the engine's 24 kHz float samples: PCM scaling of every format, resampling with state."""

from __future__ import annotations

import numpy as np
import pytest

from plexray.model.prompt import FRAME_SAMPLES
from plexray.serve.engine.audio_input import AudioCounters, StreamResampler, clean_pcm


@pytest.mark.parametrize("pcm, expected", [
    (np.array([0, 128, 255], np.uint8), [-1.0, 0.0, 127 / 128]),  # unsigned: silence is the midpoint
    (np.array([0, 32768, 65535], np.uint16), [-1.0, 0.0, 32767 / 32768]),
    (np.array([-128, 0, 127], np.int8), [-1.0, 0.0, 127 / 128]),
    (np.array([-32768, 0, 16384], np.int16), [-1.0, 0.0, 0.5]),
    (np.array([-2 ** 31, 0, 2 ** 30], np.int32), [-1.0, 0.0, 0.5]),
    (np.array([-0.5, 0.0, 0.25], np.float64), [-0.5, 0.0, 0.25]),
])
def test_every_pcm_format_is_scaled_to_full_range(pcm, expected):
    samples = clean_pcm(pcm, 24000, AudioCounters())
    assert samples.dtype == np.float32
    np.testing.assert_allclose(samples, expected, atol=1e-6)


def _tone(hz: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_resampling_filters_what_24_khz_cannot_carry():
    """An 18 kHz tone at 48 kHz is above the 12 kHz Nyquist limit of 24 kHz: it must vanish, not fold
    back into the speech band as a 6 kHz tone (what interpolation without a filter does)."""
    resampled = clean_pcm(_tone(18000, 48000), 48000, AudioCounters())
    assert _rms(resampled[1000:-1000]) < 0.01
    kept = clean_pcm(_tone(1000, 48000), 48000, AudioCounters())
    assert _rms(kept[1000:-1000]) > 0.3


@pytest.mark.parametrize("rate, chunk", [(48000, 960), (44100, 441), (16000, 123)])
def test_a_stream_resampled_chunk_by_chunk_equals_the_whole(rate, chunk):
    """The talk page sends 48 kHz in small chunks: state carried across chunks, so the chunk edges
    leave no trace (clicks, drift) in what the engine hears."""
    speech_like = _tone(440, rate) + _tone(1300, rate) * 0.3
    counters, resampler = AudioCounters(), StreamResampler()
    pieces = [clean_pcm(speech_like[start:start + chunk], rate, counters, resampler)
              for start in range(0, speech_like.size, chunk)]
    streamed = np.concatenate(pieces)
    whole = clean_pcm(speech_like, rate, AudioCounters())
    assert 0 <= whole.size - streamed.size < FRAME_SAMPLES  # all but the filter's delay (under one frame) came out
    length = min(streamed.size, whole.size)
    np.testing.assert_allclose(streamed[:length], whole[:length], atol=1e-3)
    assert counters.resampled == len(pieces)


def test_a_new_rate_starts_a_new_stream():
    resampler, counters = StreamResampler(), AudioCounters()
    first = clean_pcm(_tone(440, 48000, 0.5), 48000, counters, resampler)
    second = clean_pcm(_tone(440, 16000, 0.5), 16000, counters, resampler)
    assert 0 <= 24000 - (first.size + second.size) < FRAME_SAMPLES  # the first stream's tail was not lost
