"""A word-timing reference known by construction: espeak-ng's own account of where each word is.

espeak-ng's command line reports no word times, but libespeak-ng (the shared library installed with the
espeak-ng package) calls back with events as it synthesises: a WORD event as each word begins and a
PHONEME event as each phoneme begins, positioned in the audio it returns. A natural sentence spoken
whole (sentence prosody, words run together) is a fair test of an aligner, and these events give
every word's true span in it without any aligner or recogniser.

A word's span runs from its first sounding phoneme to the next phoneme event after its last one (the
next word's first phoneme, or a pause). The WORD event itself is not the start: espeak-ng emits it
where the previous word ended, so it includes any pause or stop closure before the word.

espeak-ng speaks some unstressed function words joined to the word before them ("in the" as one
word, "inD@"), with one WORD event for both: there the reference knows where the pair starts and
ends but not where one word gives way to the other, and says so (None) rather than guess.

The audio is trimmed at its first and last sound, as `plexray.data.tts` trims what it synthesises, and
the times are from the trimmed audio's first sample.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools

import numpy as np
import soxr

from plexray.data.tts import TRIM_THRESHOLD, split_words

RATE = 24000  # the model's rate, as plexray.data.tts returns

# speak_lib.h: espeak_AUDIO_OUTPUT, espeakINITIALIZE_PHONEME_EVENTS, espeak_EVENT_TYPE, espeak_PARAMETER
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_END, _EVENT_PHONEME = 0, 1, 5, 7
_RATE_PARAMETER, _PITCH_PARAMETER = 1, 3
_CHARS_UTF8, _POS_CHARACTER = 1, 1


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]  # id: a union; a phoneme's name here


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclasses.dataclass(frozen=True)
class ReferenceWord:
    text: str
    start_s: float | None  # None: spoken joined to the word before it, the boundary between them unknown
    end_s: float | None  # None: the word after it is joined to it


class _Recording:
    """What the synthesis callback receives for one text: audio chunks and events as
    (type, sample, text position (1-based character), phoneme name)."""

    def __init__(self):
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, bytes]] = []

    def __call__(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            self.events.append((event.type, event.sample, event.text_position, bytes(event.id)))
            index += 1
        return 0  # 0: go on synthesising


@functools.cache
def _library() -> tuple[ctypes.CDLL, int, _Recording]:
    """libespeak-ng, initialised once per process (its state is global), with the recording it fills."""
    library = ctypes.CDLL("libespeak-ng.so.1")
    sample_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS)
    if sample_rate <= 0:
        raise RuntimeError("libespeak-ng failed to initialise")
    recording = _Recording()
    library._plexray_callback = _Callback(recording)  # kept alive as long as the library uses it
    library.espeak_SetSynthCallback(library._plexray_callback)
    library.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return library, sample_rate, recording


def _spoken_words(events: list[tuple[int, int, int, bytes]], sample_rate: int) -> list[tuple[int, float, float]]:
    """(text position, start_s, end_s) in the untrimmed audio of each word espeak-ng spoke (a joined pair
    is one), from the event stream."""
    spans: list[list] = []
    last_phoneme_of_word = False  # the previous event was a sounding phoneme of the current word
    for kind, sample, text_position, name in events:
        seconds = sample / sample_rate
        if last_phoneme_of_word:  # whatever event comes next marks where that phoneme ends
            spans[-1][2] = seconds
        if kind == _EVENT_WORD:
            spans.append([text_position, np.nan, np.nan])
        sounding = kind == _EVENT_PHONEME and not name.startswith(b"_")  # "_", "_:": pauses
        if sounding and spans and np.isnan(spans[-1][1]):
            spans[-1][1] = seconds
        last_phoneme_of_word = sounding and bool(spans)
    return [tuple(span) for span in spans]


def _reference_words(text: str, spoken: list[tuple[int, float, float]], offset_s: float, duration_s: float
                     ) -> list[ReferenceWord]:
    """Each word of `text` with the edges espeak-ng's events give it (see the module docstring)."""
    words = split_words(text)
    positions, cursor = [], 0
    for word in words:  # where each word starts in the text, 1-based as espeak-ng counts
        cursor = text.index(word, cursor)
        positions.append(cursor + 1)
        cursor += len(word)
    # espeak-ng can report a WORD event with no sound after it (at a clause's end): not a word anyone hears
    first_words = {position: (start, end) for position, start, end in spoken if not np.isnan(start)}
    if not set(first_words) <= set(positions) or positions[0] not in first_words:
        raise ValueError(f"libespeak-ng's words do not match those of {text!r}; use plain words "
                         "(no digits, abbreviations or hyphens)")
    reference = []
    for index, (word, position) in enumerate(zip(words, positions)):
        joined_to_previous = position not in first_words
        next_joined = index + 1 < len(words) and positions[index + 1] not in first_words
        group_start = index if not joined_to_previous else max(i for i in range(index) if positions[i] in first_words)
        start, end = first_words[positions[group_start]]
        reference.append(ReferenceWord(word, None if joined_to_previous else max(0.0, start - offset_s),
                                       None if next_joined else min(duration_s, end - offset_s)))
    return reference


def spoken_with_word_times(text: str, variant: str = "m3", pitch: int = 50, rate: int = 165
                           ) -> tuple[np.ndarray, list[ReferenceWord]]:
    """`text` spoken whole by libespeak-ng's voice en-us+`variant`: [N] float32 at 24 kHz, trimmed, and
    each word of `plexray.data.tts.split_words(text)` with its true edges (s from the first sample)."""
    library, sample_rate, recording = _library()
    recording.chunks.clear()
    recording.events.clear()
    if library.espeak_SetVoiceByName(f"en-us+{variant}".encode()) != 0:
        raise ValueError(f"libespeak-ng has no voice en-us+{variant}")
    library.espeak_SetParameter(_RATE_PARAMETER, rate, 0)
    library.espeak_SetParameter(_PITCH_PARAMETER, pitch, 0)
    encoded = ctypes.create_string_buffer(text.encode())
    if library.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
        raise RuntimeError(f"libespeak-ng failed to speak {text!r}")
    library.espeak_Synchronize()
    samples = soxr.resample(np.concatenate(recording.chunks).astype(np.float32) / 32768, sample_rate, RATE)
    loud = np.flatnonzero(np.abs(samples) > TRIM_THRESHOLD)
    first, last = loud[0], loud[-1] + 1
    return (samples[first:last].astype(np.float32),
            _reference_words(text, _spoken_words(recording.events, sample_rate), first / RATE, (last - first) / RATE))
