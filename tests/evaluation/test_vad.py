"""Silero VAD on espeak-ng speech placed at known times: true times at every input rate, clear errors for bad audio."""

import numpy as np
import pytest
import soxr

from plexray.speech.errors import SpeechError
from plexray.speech.vad import WINDOW_S, Segment, merge_segments, speech_segments

from constructed_tracks import RATE, VAD_TOLERANCE_S, place


@pytest.fixture(scope="module")
def placed():
    """(a 24 kHz track, the true spans, the segments VAD finds in it). "Yeah." and "Right." are single
    words, "Okay then." has a 45 ms gap: one segment each."""
    track, truth = place([("Yeah.", 1.0), ("Right.", 3.3), ("Okay then.", 5.6)], 8.0)
    return track, truth, speech_segments(track, RATE)


def test_segments_are_where_the_speech_was_placed(placed):
    _, truth, found = placed
    assert len(found) == len(truth)
    for segment, true in zip(found, truth):
        assert abs(segment.start_s - true.start_s) <= VAD_TOLERANCE_S, (segment, true)
        assert abs(segment.end_s - true.end_s) <= VAD_TOLERANCE_S, (segment, true)


@pytest.mark.parametrize("rate", [16000, 48000, 44100])
def test_every_input_rate_gives_the_times_of_24khz_input(placed, rate):
    # Full-Duplex-Bench fed 24 kHz audio to this 16 kHz VAD: every time came out x1.5. Here the audio
    # is resampled to the VAD's rate first, so the rate the audio comes in at changes nothing.
    track, _, at_24k = placed
    at_rate = speech_segments(soxr.resample(track, RATE, rate), rate)
    assert len(at_rate) == len(at_24k) == 3
    for a, b in zip(at_24k, at_rate):
        assert abs(a.start_s - b.start_s) <= WINDOW_S and abs(a.end_s - b.end_s) <= WINDOW_S, (a, b)


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
