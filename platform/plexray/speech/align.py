"""Word times for a known text on its audio: forced alignment, for any speech whose script is known.

A synthesizer's own word times exist only for some backends (espeak-ng's command line gives none, a
neural TTS endpoint none), so the data pipeline takes every utterance's word times from here; `data
ingest` and behavioural evaluation can do the same with a transcript.

The embedded backend is PocketSphinx's alignment search (`Decoder.set_align_text`) with the model its
package ships: it only has to decide where each known word begins and ends, not which word it is, so
it is far more reliable than its free recognition (`speech/asr.py`), and it takes about 10 ms per
second of speech.

Words it cannot place are *interpolated*, never fatal, and counted in `Alignment.interpolated`:
- a word whose spelling is not in PocketSphinx's dictionary (names, "matcha", numbers written as
  digits; PocketSphinx has no grapheme-to-phoneme fallback) is left out of the alignment text; the
  search then reads its sound as silence between its neighbours, and it is given the time between the
  aligned word before it and the aligned word after it (shared by length when several are left out);
- when the search fails for the whole utterance (audio that is not the text), every word is
  interpolated over the whole audio, by length.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import typing as tp

import numpy as np

from plexray.speech.asr import Word, pocketsphinx_decoder, pocketsphinx_words
from plexray.speech.audio import SPEECH_SAMPLE_RATE, to_speech_rate

# PocketSphinx's alignment grammar starts and ends in silence; audio trimmed to its first and last
# sound (as synthesizers' is) fails to align without some silence around it. 0.1 s was not enough:
# the search failed on 2 of 6 whole espeak-ng sentences in tests/speech (every word interpolated);
# with 0.3 s none of 24 (4 voices) failed.
EDGE_SILENCE_S = 0.3


@dataclasses.dataclass(frozen=True)
class Alignment:
    words: tuple[Word, ...]  # one per word of the text, in its order and spelling, seconds from the audio's start
    interpolated: tuple[int, ...]  # indexes of the words whose times were interpolated, not aligned


class Aligner(tp.Protocol):
    name: str

    def align(self, samples: np.ndarray, sample_rate: int, words: tp.Sequence[str]) -> Alignment:
        """Times of `words` (the text as spoken, punctuation allowed) in `samples` ([N] float at `sample_rate`)."""
        ...


def dictionary_tokens(word: str) -> list[str]:
    """A written word as the dictionary spells it: lower case, no punctuation, hyphenated parts apart."""
    return [token.strip("'") for token in re.findall(r"[a-z0-9']+", word.lower()) if token.strip("'")]


def interpolate(words: tp.Sequence[str], placed: tp.Sequence[Word | None], duration_s: float) -> list[Word]:
    """Every word timed: each run of unplaced (None) words shares, by length, the time between the placed
    words around it (or the audio's start or end)."""
    timed: list[Word] = []
    index = 0
    while index < len(words):
        if placed[index] is not None:
            timed.append(placed[index])
            index += 1
            continue
        run_end = index
        while run_end < len(words) and placed[run_end] is None:
            run_end += 1
        start_s = timed[-1].end_s if timed else 0.0
        end_s = placed[run_end].start_s if run_end < len(words) else duration_s
        lengths = np.array([max(1, len(words[i])) for i in range(index, run_end)], dtype=np.float64)
        edges = start_s + (max(0.0, end_s - start_s)) * np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
        timed += [Word(words[i], float(edges[k]), float(edges[k + 1])) for k, i in enumerate(range(index, run_end))]
        index = run_end
    return timed


class PocketSphinxAligner:
    """PocketSphinx forced alignment with its shipped US English model; one utterance at a time per instance."""

    name = "pocketsphinx-align"

    def __init__(self):
        # FATAL: a failed search logs an ERROR, and here it is handled (every word interpolated) and counted
        self._decoder = pocketsphinx_decoder(loglevel="FATAL")
        self._lock = threading.Lock()  # a decoder holds one utterance (and one alignment text) at a time

    def align(self, samples: np.ndarray, sample_rate: int, words: tp.Sequence[str]) -> Alignment:
        audio = to_speech_rate(samples, sample_rate)  # checked (bad audio raises SpeechError) and at 16 kHz
        duration_s = audio.size / SPEECH_SAMPLE_RATE
        tokens = [dictionary_tokens(word) for word in words]
        known = [bool(parts) and all(self._decoder.lookup_word(part) is not None for part in parts) for parts in tokens]
        text = " ".join(part for parts, ok in zip(tokens, known) if ok for part in parts)
        segments = self._aligned_tokens(audio, text) if text else None
        placed: list[Word | None] = [None] * len(words)
        if segments is not None:
            cursor = 0
            for index, (parts, ok) in enumerate(zip(tokens, known)):
                if ok:
                    first, last = segments[cursor], segments[cursor + len(parts) - 1]
                    cursor += len(parts)
                    placed[index] = Word(words[index], max(0.0, first.start_s), min(duration_s, last.end_s),
                                         first.confidence)
        return Alignment(tuple(interpolate(words, placed, duration_s)),
                         tuple(index for index, word in enumerate(placed) if word is None))

    def _aligned_tokens(self, audio: np.ndarray, text: str) -> list[Word] | None:
        """The aligned dictionary tokens of `text` in `audio` (16 kHz), times from its start; None if the search failed."""
        pad = np.zeros(round(EDGE_SILENCE_S * SPEECH_SAMPLE_RATE), np.float32)
        with self._lock:
            self._decoder.set_align_text(text)
            segments = pocketsphinx_words(self._decoder, np.concatenate([pad, audio, pad]), SPEECH_SAMPLE_RATE)
        if segments is None or len(segments) != len(text.split()):
            return None
        return [dataclasses.replace(word, start_s=word.start_s - EDGE_SILENCE_S, end_s=word.end_s - EDGE_SILENCE_S)
                for word in segments]
