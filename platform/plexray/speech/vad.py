"""Voice activity: where in a track someone speaks, from Silero VAD (the `silero-vad` package ships its model).

Silero judges 512-sample windows (32 ms) at 16 kHz; audio at any other rate is resampled to 16 kHz
first (`plexray.speech.audio`), so segment times are true times whatever rate comes in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import typing as tp
import warnings

import numpy as np
import torch

from plexray.speech.audio import SPEECH_SAMPLE_RATE, to_speech_rate
from plexray.speech.errors import BackendMissing

WINDOW_SAMPLES = 512  # Silero's window at 16 kHz: one speech probability per 32 ms
WINDOW_S = WINDOW_SAMPLES / SPEECH_SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Segment:
    """A span of speech, seconds from the start of the track."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# The model keeps recurrent state between windows (reset at the start of each track), so one track is
# scored at a time per process.
_MODEL_LOCK = threading.Lock()


@functools.cache
def _silero() -> tuple[tp.Any, tp.Callable[..., list[dict]]]:
    """(Silero VAD's TorchScript model, silero's get_speech_timestamps), loaded once per process from the
    model files inside the package."""
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError:
        raise BackendMissing("voice activity detection needs the silero-vad package: pip install silero-vad") from None
    finally:
        # Importing silero_vad calls torch.set_num_threads(1) for the whole process; give the process
        # (which may also run the speech model) its threads back.
        torch.set_num_threads(threads)
    with warnings.catch_warnings():  # silero-vad 6 finds its files with a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero_vad.load_silero_vad(onnx=False), silero_vad.get_speech_timestamps


@contextlib.contextmanager
def _one_torch_thread() -> tp.Iterator[None]:
    """torch on one thread meanwhile (the setting is per process; restored after).

    A 512-sample window is far too small to share between threads, and on a busy machine threads that
    wait for each other made one 8 s track take 16 s instead of 0.2 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def speech_segments(samples: np.ndarray, sample_rate: int, *, min_silence_s: float = 0.1,
                    min_speech_s: float = 0.1, threshold: float = 0.5, speech_pad_s: float = 0.0) -> list[Segment]:
    """The speech in `samples` ([N] float in [-1, 1] at `sample_rate` Hz), in time order.

    min_silence_s: shorter silences do not split a segment; min_speech_s: shorter segments are dropped
    (0.1 s rather than Silero's 0.25 s: a backchannel "mhm" can be shorter than a quarter second);
    threshold: speech probability that starts a segment; speech_pad_s: widen each segment by this much
    each side (0 by default: the metrics want the onset and offset as heard, not padded).
    """
    audio = torch.from_numpy(to_speech_rate(samples, sample_rate))
    model, get_speech_timestamps = _silero()
    with _MODEL_LOCK, _one_torch_thread():  # Silero runs its 512-sample windows at 16 kHz (WINDOW_SAMPLES)
        stamps = get_speech_timestamps(
            audio, model, threshold=threshold, sampling_rate=SPEECH_SAMPLE_RATE,
            min_speech_duration_ms=min_speech_s * 1000, min_silence_duration_ms=min_silence_s * 1000,
            speech_pad_ms=speech_pad_s * 1000)
    return [Segment(stamp["start"] / SPEECH_SAMPLE_RATE, stamp["end"] / SPEECH_SAMPLE_RATE) for stamp in stamps]


def merge_segments(segments: tp.Iterable[Segment], max_gap_s: float) -> list[Segment]:
    """`segments` in time order with every gap of at most `max_gap_s` closed (overlaps merge too).

    Full-Duplex-Bench v1.5 merges gaps of 0.6 s in the user's speech and 0.5 s in the model's before
    timing overlaps: a breath inside a sentence is not a stop.
    """
    if max_gap_s < 0:
        raise ValueError(f"max_gap_s must be >= 0, got {max_gap_s}")
    merged: list[Segment] = []
    for segment in sorted(segments, key=lambda s: s.start_s):
        if merged and segment.start_s - merged[-1].end_s <= max_gap_s:
            merged[-1] = Segment(merged[-1].start_s, max(merged[-1].end_s, segment.end_s))
        else:
            merged.append(segment)
    return merged
