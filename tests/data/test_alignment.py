"""Text alignment strategies on hand-checked examples (frames of 80 ms; PAD=3, EPAD=0)."""

import numpy as np
import pytest

from plexray.data.alignment import Span, align

# A fake tokenizer with known token counts: one token per letter group, ids from a table.
TOKENS = {"hi": [100], "there": [101, 102], "you": [103], "hello": [104, 105, 106]}


def tokenize(text):
    return [token for word in text.split() for token in TOKENS[word]]


def test_word_strategy_places_tokens_at_word_starts_with_epad_before():
    words = [Span("hi", 0.24, 0.4), Span("there", 0.41, 0.8), Span("you", 1.0, 1.2)]
    row, dropped, _ = align("word", words, [], 16, tokenize)
    # hi: floor(0.24*12.5)=3 -> EPAD at 2; there: floor(0.41*12.5)=5 -> EPAD at 4, tokens 5,6;
    # you: floor(1.0*12.5)=12 -> EPAD at 11.
    expected = [3, 3, 0, 100, 0, 101, 102, 3, 3, 3, 3, 0, 103, 3, 3, 3]
    assert row.tolist() == expected and dropped == 0


def test_word_strategy_pushes_a_word_after_a_long_previous_one():
    words = [Span("hello", 0.0, 0.1), Span("you", 0.09, 0.2)]  # both start in frame 0/1
    row, _, _ = align("word", words, [], 6, tokenize)
    assert row.tolist() == [104, 105, 106, 103, 3, 3]  # no EPAD: the frame before "you" is not padding


def test_word_strategy_counts_tokens_past_the_end():
    row, dropped, _ = align("word", [Span("hello", 0.3, 0.5)], [], 5, tokenize)
    assert row.tolist() == [3, 3, 0, 104, 105] and dropped == 1


def test_onset_strategy_clusters_at_the_turn_start():
    # turn frames [2, 12): window max(1, int(10*0.3)) = 3 frames, all 3 tokens fit.
    row, dropped, _ = align("onset", [], [Span("hi there", 0.16, 0.96)], 14, tokenize)
    assert row.tolist() == [3, 0, 100, 101, 102, 3, 3, 3, 3, 3, 3, 3, 3, 3] and dropped == 0


def test_onset_strategy_grows_the_window_instead_of_dropping_text():
    # turn frames [0, 5): window int(5*0.3)=1 frame but 4 tokens: all kept, still at the onset.
    row, dropped, _ = align("onset", [], [Span("hi hello", 0.0, 0.4)], 8, tokenize)
    assert row.tolist() == [100, 104, 105, 106, 3, 3, 3, 3] and dropped == 0


def test_uniform_strategy_spreads_over_the_turn():
    # turn frames [0, 8), 4 tokens -> frames 0, 2, 4, 6.
    row, dropped, _ = align("uniform", [], [Span("hi hello", 0.0, 0.64)], 10, tokenize)
    assert row.tolist() == [100, 3, 104, 3, 105, 3, 106, 3, 3, 3] and dropped == 0
    assert isinstance(row, np.ndarray)


@pytest.mark.parametrize("strategy", ["word", "onset", "uniform"])
def test_a_word_starting_after_the_audio_ends_is_dropped_and_counted(strategy):
    """The transcript can outlast the audio (conversations are cut at max_duration_s): 6 frames of
    audio, "hi" at frame 1, "you" at frame 12 and "there" at frame 6 (the first frame past the end)."""
    spans = [Span("hi", 0.08, 0.2), Span("you", 1.0, 1.2), Span("there", 0.48, 0.6)]
    row, dropped, late_words = align(strategy, spans, spans, 6, tokenize)
    assert row[1] == 100 and late_words == 2 and dropped == 3
    assert set(row.tolist()[2:]) == {3}
