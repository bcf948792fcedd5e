"""Speech synthesis for dialogues: a TTS interface and its espeak-ng implementation, with word timings.

espeak-ng speaks each turn whole (sentence prosody: words run together, pitch falls only at sentence
ends) and the word times come from forced alignment of the known text on that audio
(`plexray.speech.align`), as they must for any backend whose synthesizer reports no word times. An
earlier version spoke one word at a time and joined the words with gaps: exact times, but speech with a
pause at nearly every word boundary and isolated-word intonation, which a model would learn to imitate.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing as tp

import numpy as np

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.data.personas import Voice
from plexray.model.prompt import SAMPLE_RATE
from plexray.speech.align import PocketSphinxAligner

TRIM_THRESHOLD = 0.01  # fraction of full scale below which an utterance's edges count as silence


@dataclasses.dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float
    interpolated: bool = False  # the aligner could not place it: timed between its neighbours (speech/align.py)


@dataclasses.dataclass(frozen=True)
class Utterance:
    samples: np.ndarray  # [N] float32, 24 kHz
    words: tuple[WordTiming, ...]  # relative to the first sample

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class SpeechSynthesizer(tp.Protocol):
    def speak(self, text: str, voice: Voice) -> Utterance: ...


def split_words(text: str) -> list[str]:
    """Words with their trailing punctuation kept (as they appear in transcripts)."""
    return [w for w in re.split(r"\s+", text.strip()) if re.search(r"[\w']", w)]


def trim_silence(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > TRIM_THRESHOLD)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


@functools.cache
def _aligner() -> PocketSphinxAligner:
    """One aligner per process (a model load), shared by every synthesizer in it."""
    return PocketSphinxAligner()


@functools.lru_cache(maxsize=4096)  # backchannels and the voice sample text repeat in every conversation
def _spoken(text: str, variant: str, pitch: int, rate: int) -> Utterance:
    words = split_words(text)
    samples = trim_silence(synthesize(" ".join(words), EspeakVoice("en-us", variant, pitch, rate)))
    if not words or samples.size == 0:
        return Utterance(np.zeros(0, np.float32), ())
    alignment = _aligner().align(samples, SAMPLE_RATE, words)
    return Utterance(samples.astype(np.float32),
                     tuple(WordTiming(w.text, w.start_s, w.end_s, index in alignment.interpolated)
                           for index, w in enumerate(alignment.words)))


class EspeakSynthesizer:
    def speak(self, text: str, voice: Voice) -> Utterance:
        return _spoken(text, voice.variant, voice.pitch, voice.rate)


def synthesizer(name: str) -> SpeechSynthesizer:
    if name == "espeak":
        return EspeakSynthesizer()
    raise ValueError(f"unknown TTS backend {name!r}")
