"""Silero VAD on espeak-ng speech placed at known times: true times at every input rate, clear errors for bad audio."""

import numpy as np
import pytest
import soxr

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.data.tts import trim_silence
from plexray.speech.errors import SpeechError
from plexray.speech.vad import WINDOW_S, Segment, merge_segments, speech_segments

RATE = 24000  # the model's rate
# Silero reports an onset within about one 32 ms window; its offset comes one to two windows after
# the speech ends (its probability decays, and the end is the start of the first quiet window):
# measured 0-90 ms on espeak-ng speech. Three windows covers both.
TOLERANCE_S = 3 * WINDOW_S


def _track(placements: list[tuple[str, float]], duration_s: float) -> tuple[np.ndarray, list[Segment]]:
    """A 24 kHz track with each text spoken (silence trimmed) from its start time; and the true spans."""
    track = np.zeros(round(duration_s * RATE), np.float32)
    truth = []
    for text, start_s in placements:
        speech = trim_silence(synthesize(text, EspeakVoice(variant="m3")))
        start = round(start_s * RATE)
        track[start:start + speech.size] = speech
        truth.append(Segment(start / RATE, (start + speech.size) / RATE))
    return track, truth


@pytest.fixture(scope="module")
def placed():
    # "Yeah." and "Right." are single words: one segment each, whatever the gaps inside a sentence.
    return _track([("Yeah.", 1.0), ("Right.", 3.3), ("Okay then.", 5.6)], 8.0)


def test_segments_are_where_the_speech_was_placed(placed):
    track, truth = placed
    found = speech_segments(track, RATE)
    assert len(found) == len(truth)
    for segment, true in zip(found, truth):
        assert abs(segment.start_s - true.start_s) <= TOLERANCE_S, (segment, true)
        assert abs(segment.end_s - true.end_s) <= TOLERANCE_S, (segment, true)


@pytest.mark.parametrize("rate", [16000, 48000, 44100])
def test_every_input_rate_gives_the_times_of_16khz_input(placed, rate):
    # Full-Duplex-Bench fed 24 kHz audio to this 16 kHz VAD: every time came out x1.5. Here the audio
    # is resampled to the VAD's rate first, so the rate the audio comes in at changes nothing.
    track, _ = placed
    at_16k = speech_segments(soxr.resample(track, RATE, 16000), 16000)
    at_rate = speech_segments(soxr.resample(track, RATE, rate), rate)
    at_24k = speech_segments(track, RATE)
    assert len(at_rate) == len(at_24k) == len(at_16k) == 3
    for a, b, c in zip(at_16k, at_24k, at_rate):
        for times in ((a.start_s, b.start_s, c.start_s), (a.end_s, b.end_s, c.end_s)):
            assert max(times) - min(times) <= WINDOW_S, (a, b, c)


def test_silence_has_no_speech():
    assert speech_segments(np.zeros(3 * RATE, np.float32), RATE) == []


def test_short_silences_are_merged_and_long_ones_kept():
    segments = [Segment(3.0, 4.0), Segment(0.0, 1.0), Segment(1.4, 2.0), Segment(2.5, 3.2)]
    assert merge_segments(segments, 0.5) == [Segment(0.0, 4.0)]  # gaps of exactly 0.5 close
    assert merge_segments(segments, 0.45) == [Segment(0.0, 2.0), Segment(2.5, 4.0)]
    assert merge_segments(segments, 0.3) == [Segment(0.0, 1.0), Segment(1.4, 2.0), Segment(2.5, 4.0)]
    assert Segment(2.5, 4.0).duration_s == 1.5


@pytest.mark.parametrize("samples, rate, problem", [
    (np.zeros(0, np.float32), RATE, "empty"),
    (np.array([0.0, np.nan, 0.1], np.float32), RATE, "NaN"),
    (np.zeros((2, 100), np.float32), RATE, "mono"),
    (np.zeros(100, np.int16), RATE, "float"),
    (np.zeros(100, np.float32), 0, "sample rate"),
])
def test_bad_audio_is_refused_with_the_problem_named(samples, rate, problem):
    with pytest.raises(SpeechError, match=problem):
        speech_segments(samples, rate)
