"""Text onto the 12.5 Hz frame grid: the agent's text stream (row 0 of the LM input).

One function per named strategy; the manifest records which one built a dataset.

- `word`: from word timings. A word's first token lands on frame floor(start x 12.5), its other
  tokens on the following frames (pushed later if the previous word still occupies them); the
  end-of-padding id 0 sits on the frame just before a word when that frame is padding; every
  other frame is padding id 3. This is Moshi's inner-monologue layout.
- `onset` (fixes-summary.md fix 2): a turn's tokens cluster at its speech onset, one per frame
  from the turn's first frame, in a window of max(1, int(0.3 x turn frames)) frames. The seed
  dropped tokens that did not fit; here the window grows to hold every token (up to the turn's
  end) so no text is lost. End-of-padding before the cluster, as for words.
- `uniform`: a turn's tokens spread evenly over the turn's frames (the rule fix 2 replaced;
  kept as a baseline).

The transcript can outlast the audio (a conversation is cut at `speech.max_duration_s`): a word
(or turn) that starts after the last frame is dropped and counted, and the rest is aligned.
"""

from __future__ import annotations

import math
import typing as tp

import numpy as np

from plexray.model.architectures import TEXT_END_OF_PADDING_ID, TEXT_PADDING_ID
from plexray.model.prompt import FRAME_RATE

STRATEGIES = ("word", "onset", "uniform")
ONSET_FRACTION = 0.3

Tokenize = tp.Callable[[str], list[int]]


class Span(tp.NamedTuple):
    """Text spoken from start_s to end_s (a word, or a whole turn)."""

    text: str
    start_s: float
    end_s: float


class TextRow(tp.NamedTuple):
    """The agent's text row and what did not make it in."""

    row: np.ndarray  # [num_frames] int64
    dropped_tokens: int  # tokens left out: past the end of the row or of their turn's window, late words' included
    late_words: int  # words that start after the audio ends, dropped whole


def frame_of(seconds: float) -> int:
    return int(math.floor(seconds * FRAME_RATE + 1e-9))


def _place_run(row: np.ndarray, first_frame: int, tokens: list[int], last_frame: int) -> int:
    """Write tokens from the first free frame >= first_frame; returns how many did not fit."""
    frame = first_frame
    while frame < len(row) and row[frame] != TEXT_PADDING_ID:
        frame += 1
    if frame > 0 and row[frame - 1] == TEXT_PADDING_ID and frame <= last_frame:
        row[frame - 1] = TEXT_END_OF_PADDING_ID
    written = 0
    for token in tokens:
        if frame > last_frame or frame >= len(row):
            break
        row[frame] = token
        frame += 1
        written += 1
    return len(tokens) - written


def align_words(words: tp.Sequence[Span], num_frames: int, tokenize: Tokenize) -> tuple[np.ndarray, int]:
    """Returns the text row [num_frames] and the number of tokens that fell off the end."""
    row = np.full(num_frames, TEXT_PADDING_ID, dtype=np.int64)
    dropped = 0
    for word in sorted(words, key=lambda w: w.start_s):
        dropped += _place_run(row, frame_of(word.start_s), tokenize(word.text), num_frames - 1)
    return row, dropped


def turn_frames(turn: Span, num_frames: int) -> tuple[int, int]:
    """The frames [start, end) a turn covers: at least one, none past the end of the conversation."""
    start = frame_of(turn.start_s)
    return start, min(num_frames, max(frame_of(turn.end_s), start + 1))


def align_onset(turns: tp.Sequence[Span], num_frames: int, tokenize: Tokenize) -> tuple[np.ndarray, int]:
    row = np.full(num_frames, TEXT_PADDING_ID, dtype=np.int64)
    dropped = 0
    for turn in sorted(turns, key=lambda t: t.start_s):
        start, end = turn_frames(turn, num_frames)
        tokens = tokenize(turn.text)
        window = max(1, int((end - start) * ONSET_FRACTION), len(tokens))
        dropped += _place_run(row, start, tokens, min(end, start + window) - 1)
    return row, dropped


def align_uniform(turns: tp.Sequence[Span], num_frames: int, tokenize: Tokenize) -> tuple[np.ndarray, int]:
    row = np.full(num_frames, TEXT_PADDING_ID, dtype=np.int64)
    dropped = 0
    for turn in sorted(turns, key=lambda t: t.start_s):
        start, end = turn_frames(turn, num_frames)
        tokens = tokenize(turn.text)
        span = end - start
        if len(tokens) > span:  # more tokens than frames: one per frame, the rest do not fit
            dropped += len(tokens) - span
            tokens = tokens[:span]
        for j, token in enumerate(tokens):
            row[start + j * span // len(tokens)] = token
    return row, dropped


STRATEGY_FUNCTIONS = {"word": align_words, "onset": align_onset, "uniform": align_uniform}


def align(strategy: str, words: tp.Sequence[Span], turns: tp.Sequence[Span], num_frames: int,
          tokenize: Tokenize) -> TextRow:
    """The agent's text row [num_frames] (int64) by `strategy`, with what was dropped.

    `words` feed the word strategy, `turns` the others. Spans that start after the last frame are
    left out before placing the rest: there is no frame to put them on.
    """
    if strategy not in STRATEGY_FUNCTIONS:
        raise ValueError(f"unknown alignment strategy {strategy!r}; expected one of {STRATEGIES}")
    spans = words if strategy == "word" else turns
    on_time = [span for span in spans if frame_of(span.start_s) < num_frames]
    late = [span for span in spans if frame_of(span.start_s) >= num_frames]
    row, dropped = STRATEGY_FUNCTIONS[strategy](on_time, num_frames, tokenize)
    return TextRow(row, dropped + sum(len(tokenize(span.text)) for span in late),
                   sum(len(span.text.split()) for span in late))

