"""Speech synthesis for dialogues: a TTS interface and its espeak-ng implementation with word timings.

espeak-ng's command line reports no word boundaries, so the espeak backend speaks each word on
its own (cached per word and voice), trims the silence around it and joins the words with short
gaps (longer after commas and sentence ends). The joins are where the words are: the timings are
exact by construction, which the `word` alignment strategy needs.
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

WORD_GAP_S = 0.045
COMMA_GAP_S = 0.18
SENTENCE_GAP_S = 0.32
TRIM_THRESHOLD = 0.01  # fraction of full scale below which a word's edges count as silence


@dataclasses.dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float
    end_s: float


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
    """Words with their trailing punctuation kept (it decides the pause after them)."""
    return [w for w in re.split(r"\s+", text.strip()) if re.search(r"[\w']", w)]


def trim_silence(samples: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(samples) > TRIM_THRESHOLD)
    return samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]


@functools.lru_cache(maxsize=8192)
def _spoken_word(word: str, variant: str, pitch: int, rate: int) -> np.ndarray:
    return trim_silence(synthesize(word, EspeakVoice("en-us", variant, pitch, rate)))


class EspeakSynthesizer:
    def speak(self, text: str, voice: Voice) -> Utterance:
        pieces: list[np.ndarray] = []
        words: list[WordTiming] = []
        cursor = 0
        for word in split_words(text):
            spoken = _spoken_word(re.sub(r"[^\w'-]", "", word) or word, voice.variant, voice.pitch, voice.rate)
            if spoken.size == 0:
                continue
            words.append(WordTiming(word, cursor / SAMPLE_RATE, (cursor + spoken.size) / SAMPLE_RATE))
            gap_s = SENTENCE_GAP_S if word[-1] in ".!?" else COMMA_GAP_S if word[-1] in ",;:" else WORD_GAP_S
            gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
            pieces += [spoken, gap]
            cursor += spoken.size + gap.size
        if not pieces:
            return Utterance(np.zeros(0, np.float32), ())
        samples = np.concatenate(pieces[:-1])  # no pause after the last word
        return Utterance(samples.astype(np.float32), tuple(words))


def synthesizer(name: str) -> SpeechSynthesizer:
    if name == "espeak":
        return EspeakSynthesizer()
    raise ValueError(f"unknown TTS backend {name!r}")
