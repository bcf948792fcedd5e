"""Long conversations as training windows [prompt][slice of the conversation] (plexray.train.data.windows),
checked against the whole row without Ray: layout, what every position reads, loss mask, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plexray.model.architectures import DELAYS
from plexray.model.inputs import transformer_inputs
from plexray.model.loader import load_model
from plexray.train.data import TrainingDataError, collate, window_frames, windows
from plexray.train.loop import LossSetup, batch_loss
from plexray.train.loss import PRESETS, token_weights

from shards import conversation_row

CONVERSATION = 40  # conversation frames of a training window in these tests, after the row's prompt


def row_frames(window, prompt_end: int) -> np.ndarray:
    """Row frame of each window frame: the prompt, then the slice starting at `window.start`."""
    index = np.arange(window.codes.shape[1])
    return np.where(index < prompt_end, index, window.start + index - prompt_end)


def scored_tokens(codes: np.ndarray, loss_frames: np.ndarray) -> np.ndarray:
    """[17, T] bool: the text and the agent and user audio tokens that the loss scores (with its delay-tail rule)."""
    text, audio = token_weights(torch.from_numpy(codes)[None], torch.from_numpy(loss_frames)[None],
                                PRESETS["personaplex"], DELAYS, dep_q=16)
    return torch.cat([text[:, None], audio], dim=1)[0].numpy() > 0


@pytest.fixture(scope="module")
def long_row(demo_bundle) -> dict:
    return conversation_row(demo_bundle, 0, frames=200)


@pytest.fixture(scope="module")
def length(long_row) -> int:
    """Frames of a training window: the (demo) prompt and CONVERSATION frames."""
    return long_row["prompt_end"] + CONVERSATION


def test_a_row_that_fits_is_one_window_as_before(demo_bundle, length):
    row = conversation_row(demo_bundle, 1, frames=30)
    prompt_end, total = row["prompt_end"], row["codes"].shape[1]
    [window] = windows(row["codes"], 0, prompt_end, length, mask_prompt=True)
    assert np.array_equal(window.codes[:, :total], row["codes"]) and np.all(window.codes[:, total:] == -1)
    assert not window.loss_frames[:prompt_end].any() and window.loss_frames[prompt_end:total].all()
    assert not window.loss_frames[total:].any()


def test_long_row_windows_start_with_the_prompt_and_slide_by_half_a_window(long_row, length):
    codes, prompt_end = long_row["codes"], long_row["prompt_end"]
    conversation = CONVERSATION
    cut = windows(codes, 0, prompt_end, length, mask_prompt=True)
    assert len(cut) > 2 and all(w.codes.shape == (17, length) for w in cut)
    assert np.array_equal(cut[0].codes, codes[:, :length])  # the first window is the row's start
    starts = [w.start for w in cut]
    stride = conversation - conversation // 2
    assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1])) and 0 < starts[-1] - starts[-2] <= stride
    assert starts[-1] + conversation == codes.shape[1]  # the last window ends at the row's end
    for window in cut:
        frames = row_frames(window, prompt_end)
        # The conversation part is the slice itself; the prompt part is the prompt, except the last
        # 1 + delay frames of each stream, which feed the window's first conversation positions.
        assert np.array_equal(window.codes[:, prompt_end:], codes[:, frames[prompt_end:]])
        for stream, delay in enumerate(DELAYS):
            kept = prompt_end - 1 - delay if window.start > prompt_end else prompt_end
            assert np.array_equal(window.codes[stream, :kept], codes[stream, :kept])
        assert not window.loss_frames[:prompt_end].any()  # the prompt is never scored


def test_every_window_position_reads_what_it_reads_in_the_whole_row(demo_bundle, long_row, length):
    """The transformer inputs (plexray.model.inputs) of a window are the row's at the prompt positions
    and then at the slice's positions: the real previous frames at the boundary, not the prompt's."""
    lm = demo_bundle.lm
    codes, prompt_end = long_row["codes"], long_row["prompt_end"]
    row_inputs = transformer_inputs(lm, torch.from_numpy(codes.astype(np.int64))[None])[0]
    for window in windows(codes, 0, prompt_end, length, mask_prompt=True):
        inputs = transformer_inputs(lm, torch.from_numpy(window.codes)[None])[0]
        assert torch.equal(inputs, row_inputs[:, row_frames(window, prompt_end)])


def test_every_conversation_token_is_scored_with_context_behind_it(long_row, length):
    codes, prompt_end = long_row["codes"].astype(np.int64), long_row["prompt_end"]
    conversation = CONVERSATION
    whole = np.ones(codes.shape[1], dtype=bool)
    whole[:prompt_end] = False
    wanted = scored_tokens(codes, whole)  # what training the whole row at once would score
    times_scored = np.zeros(wanted.shape, dtype=int)
    for window in windows(codes, 0, prompt_end, length, mask_prompt=True):
        frames = row_frames(window, prompt_end)
        scored = scored_tokens(window.codes, window.loss_frames)
        stream, frame = np.nonzero(scored)
        assert np.array_equal(window.codes[stream, frame], codes[stream, frames[frame]])  # the row's own targets
        if window.start > prompt_end:  # at least about half a window of conversation before every scored frame
            assert frame.min() - prompt_end >= conversation // 2 - 1
        np.add.at(times_scored, (stream, frames[frame]), 1)
    assert np.all(times_scored[wanted] >= 1) and not times_scored[~wanted].any()
    assert times_scored.max() <= 2  # overlaps score a window's last frame again, nothing more


def test_a_prompt_that_fills_the_window_is_refused(long_row):
    with pytest.raises(TrainingDataError, match="raise train.max_frames"):
        windows(long_row["codes"], 0, long_row["prompt_end"], long_row["prompt_end"] + 1, mask_prompt=True)


def test_a_batch_holds_every_window_and_trains_on_a_small_context_model(demo_checkpoint, demo_bundle, long_row,
                                                                      length):
    """A demo LM with a small context (prompt + 40 frames): windows are capped at it, and the loss of the batch is finite."""
    lm = load_model(str(demo_checkpoint), context=length).lm
    assert window_frames(2048, lm) == length and window_frames(48, lm) == 48
    short = conversation_row(demo_bundle, 2, frames=10)
    rows = {name: [row[name] for row in (short, long_row)] for name in short}
    batch = collate(rows, window_frames(2048, lm), mask_prompt=True)
    long_windows = windows(long_row["codes"], 0, long_row["prompt_end"], length, mask_prompt=True)
    assert batch.codes.shape == (1 + len(long_windows), 17, length)
    assert batch.real_frames == short["codes"].shape[1] + length * len(long_windows)
    setup = LossSetup(PRESETS["personaplex"], list(lm.delays), lm.dep_q)
    with torch.no_grad():
        result = batch_loss(lm, batch, setup, torch.device("cpu"))
    assert torch.isfinite(result.total)
