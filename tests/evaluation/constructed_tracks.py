"""Agent tracks with espeak-ng speech placed at known times, for the speech tools' and metrics' tests."""

from __future__ import annotations

import numpy as np

from plexray.data.personas import Voice
from plexray.data.tts import EspeakSynthesizer
from plexray.speech.vad import Segment, WINDOW_S

RATE = 24000  # the model's rate
# Silero reports an onset within one or two 32 ms windows (measured 5-69 ms late on espeak-ng speech);
# its offset later: its speech probability decays over a few windows after the sound stops, and the end
# it reports is the start of the first window below its threshold (measured 0-105 ms late, the most
# after the soft endings of "window." and "thing"). Four windows covers both; one window would not.
VAD_TOLERANCE_S = 4 * WINDOW_S


def place(placements: list[tuple[str, float]], duration_s: float, voice: Voice = Voice(variant="m3")
          ) -> tuple[np.ndarray, list[Segment]]:
    """A [N] float32 24 kHz track with each text spoken from its start time (s); and each one's true span.

    Each text is spoken whole, trimmed at its first and last sound (plexray.data.tts): the span is the sound.
    """
    track = np.zeros(round(duration_s * RATE), np.float32)
    spans = []
    for text, start_s in placements:
        speech = EspeakSynthesizer().speak(text, voice).samples
        start = round(start_s * RATE)
        if start + speech.size > track.size:
            raise ValueError(f"{text!r} at {start_s} s runs past the track's {duration_s} s")
        track[start:start + speech.size] = speech
        spans.append(Segment(start / RATE, (start + speech.size) / RATE))
    return track, spans
