"""The training set as the training loop sees it: checked shards, a stable validation split, batches.

The shards are those of the Data issue (`<dataset>/shards/part-*.parquet`, one conversation per
row, `codes` a variable-shaped int16 [17, T] tensor column). Everything is checked before a
worker starts: missing columns, the wrong codebook count or an empty split fail with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from plexray.model.architectures import DELAYS, NUM_AUDIO_CODEBOOKS
from plexray.train.errors import TrainingDataError

NUM_STREAMS = 1 + 2 * NUM_AUDIO_CODEBOOKS  # text, 8 agent codebooks, 8 user codebooks
# Columns the loop reads; the rest of the contract (transcript, alignment, ...) is carried along unused.
REQUIRED_COLUMNS = ("id", "codes", "num_frames", "prompt_start", "prompt_end")


def shard_files(dataset_dir: str | Path) -> list[Path]:
    """The shards, each checked to be a whole Parquet file (Ray would fail on a damaged one with a traceback)."""
    shards = sorted((Path(dataset_dir) / "shards").glob("part-*.parquet"))
    if not shards:
        raise TrainingDataError(f"{dataset_dir}: no training shards (expected shards/part-*.parquet)")
    for path in shards:
        check_parquet_file(path)
    return shards


def check_parquet_file(path: Path) -> None:
    """Read the file's footer (a few KB): a truncated file has lost it, another format never had one."""
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:  # pyarrow raises ArrowInvalid, or OSError for I/O failures
        problem = " ".join(str(exc).split())
        raise TrainingDataError(f"{path}: not a readable Parquet file ({problem}); it is truncated or not "
                                f"Parquet: regenerate it, or move it out of {path.parent}") from None


def split_key(conversation_id: str) -> tuple[int, str]:
    """Where a conversation falls in the split order: a hash of its id, the same on every machine."""
    return zlib.crc32(conversation_id.encode()), conversation_id


def validation_cutoff(conversation_ids: list[str], validation_fraction: float) -> tuple[int, str] | None:
    """The largest split key on the validation side: the ceil(fraction * n) conversations with the
    smallest keys are held out. The size is exact (a per-id coin flip leaves a 5-conversation set
    with no validation data a third of the time) and the split depends only on the ids, not on the
    shard order or the number of workers, so training and evaluation always agree."""
    held_out = math.ceil(validation_fraction * len(conversation_ids))
    if held_out == 0:
        return None
    return sorted(split_key(i) for i in conversation_ids)[held_out - 1]


def open_splits(dataset_dir: str | Path, validation_fraction: float, min_rows: int = 1):
    """Read and check the shards -> (train, validation) Ray Datasets (validation None when the fraction is 0).

    Each split needs at least `min_rows` conversations (one per worker: every FSDP rank must step).
    """
    import ray.data
    from ray.data.expressions import col

    files = shard_files(dataset_dir)
    dataset = ray.data.read_parquet([str(f) for f in files])
    check_schema(dataset_dir, dataset.schema().names)
    first = dataset.select_columns(["id", "codes"]).take(1)
    if not first:
        raise TrainingDataError(f"{dataset_dir}: the shards hold no conversations")
    check_codes(dataset_dir, first[0]["id"], first[0]["codes"])

    ids = [str(row["id"]) for row in dataset.select_columns(["id"]).take_all()]
    cutoff = validation_cutoff(ids, validation_fraction)

    def held_out(conversation_id: str) -> bool:
        return cutoff is not None and split_key(conversation_id) <= cutoff

    # Filtered by expression (the ids are known): Ray Data evaluates it on Arrow blocks, no Python per row.
    validation_ids = [conversation_id for conversation_id in ids if held_out(conversation_id)]
    train = dataset.filter(expr=col("id").not_in(validation_ids)) if validation_ids else dataset
    validation = dataset.filter(expr=col("id").is_in(validation_ids)) if cutoff is not None else None
    # Sizes from the ids already read (counting the filtered datasets would read every shard twice more).
    validation_rows = len(validation_ids)
    sizes = {"training": len(ids) - validation_rows, "validation": validation_rows if cutoff is not None else None}
    for name, rows in sizes.items():
        if rows is not None and rows < min_rows:
            raise TrainingDataError(
                f"{dataset_dir}: the {name} split has {rows} conversations, fewer than the {min_rows} needed "
                f"(one per worker); add data or change train.validation_fraction")
    return train, validation


def check_schema(source: str | Path, columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise TrainingDataError(f"{source}: the shards lack column(s) {missing}; found {sorted(columns)} "
                                f"(expected the plexray training-set schema)")


def check_codes(source: str | Path, conversation_id: str, codes) -> None:
    shape = np.shape(codes)
    if len(shape) != 2 or shape[0] != NUM_STREAMS:
        raise TrainingDataError(f"{source}: conversation {conversation_id!r} has codes of shape {list(shape)}; "
                                f"expected [{NUM_STREAMS}, T] (text + 8 agent + 8 user codebooks)")


def window_frames(max_frames: int, lm) -> int:
    """Frames of one training sequence: `train.max_frames`, never more than the LM's context.

    LMModel.forward attends to the last `context` positions only, so a longer sequence would let the
    prompt slide out of attention, which the serving engine never does (it pins the prompt).
    """
    return min(max_frames, lm.context)


@dataclasses.dataclass
class Window:
    """One training sequence cut from a conversation: [the prompt][a slice of the conversation]."""

    codes: np.ndarray  # [17, L] int64, -1 = padding
    loss_frames: np.ndarray  # [L] bool: frames whose tokens are scored
    start: int  # row frame of the window's first conversation frame (prompt_end for the first window)


def windows(codes: np.ndarray, prompt_start: int, prompt_end: int, frames: int, mask_prompt: bool) -> list[Window]:
    """THE rule that trains long conversations as the serving engine runs them past its context.

    `codes` [17, T] is a row (prompt frames [0, prompt_end), then the conversation), `frames` = L the
    window length (`window_frames`). A row that fits is one window, padded with -1: as before. A
    longer one becomes windows [prompt (P frames)][W = L - P consecutive conversation frames], what
    the engine's attention holds at a step past its context: the pinned prompt, re-based to sit right
    before the kept conversation frames (positions are relative, so those are window positions 0..L-1).

    Stride: each window starts ceil(W / 2) conversation frames after the previous one and scores only
    the frames the previous one did not, so every scored frame sees at least about W / 2 frames of
    conversation besides the prompt (the engine gives it W), at twice the compute of cutting the row
    into disjoint windows; a disjoint cut would score the first frames of every window with nothing
    but the prompt before them, a situation that never occurs in a call. The scored range starts one
    frame early (the largest delay): the acoustic codebooks of a window's last frame are predicted at
    the position after it, which the window does not have, so the next window scores them (and that
    frame's text and semantic tokens twice). The last window ends at the row's end.

    Boundary: position s reads stream k from frame s - 1 - delay_k (plexray.model.inputs), so the
    first conversation positions of a window read the last 1 + delay_k frames of the prompt. Those
    frames (read by no prompt position) hold the real conversation frames before the slice instead,
    so every position of the window reads exactly what it reads in the whole row: the prompt's
    inputs, then the conversation's. They are prompt frames of the window, never scored. In later
    windows the prompt is context only (it is scored, if at all, in the first window).
    """
    total = codes.shape[1]
    if total <= frames:
        window = np.full((codes.shape[0], frames), -1, dtype=np.int64)
        window[:, :total] = codes
        loss_frames = np.zeros(frames, dtype=bool)
        loss_frames[:total] = True
        if mask_prompt:
            loss_frames[prompt_start:prompt_end] = False
        return [Window(window, loss_frames, prompt_end)]

    conversation_frames = frames - prompt_end  # W
    if conversation_frames < 2:  # one frame could not overlap its neighbours (see the stride above)
        raise TrainingDataError(
            f"a prompt of {prompt_end} frames leaves {max(conversation_frames, 0)} conversation frame(s) in a "
            f"training window of {frames} frames (train.max_frames, capped at the LM context); at least 2 are "
            f"needed: raise train.max_frames")
    stride = conversation_frames - conversation_frames // 2
    last_start = total - conversation_frames
    result = [windows(codes[:, :frames], prompt_start, prompt_end, frames, mask_prompt)[0]]
    start, scored_until = prompt_end, frames
    while scored_until < total:
        start = min(start + stride, last_start)
        window = np.concatenate([codes[:, :prompt_end], codes[:, start:start + conversation_frames]], axis=1)
        for stream, delay in enumerate(DELAYS):
            read_from = max(0, prompt_end - 1 - delay)
            window[stream, read_from:prompt_end] = codes[stream, start - (prompt_end - read_from):start]
        loss_frames = np.zeros(frames, dtype=bool)
        loss_frames[prompt_end + scored_until - max(DELAYS) - start:] = True
        result.append(Window(window.astype(np.int64), loss_frames, start))
        scored_until = start + conversation_frames
    return result


@dataclasses.dataclass
class Batch:
    """A micro-batch of training windows of a fixed number of frames."""

    codes: torch.Tensor  # [N, 17, T] long, -1 = padding / no token; N >= the rows' count (long rows: several windows)
    loss_frames: torch.Tensor  # [N, T] bool: frames that may carry loss (not padding, not masked prompt)
    real_frames: int  # frames of actual conversation in the batch (for throughput)


def collate(rows: dict[str, np.ndarray], max_frames: int, mask_prompt: bool) -> Batch:
    """Numpy batch from Ray Data -> Batch of every window (see `windows`) of every row, `max_frames`
    long (pass `window_frames(...)`: it caps them at the LM context)."""
    cut: list[Window] = []
    for i in range(len(rows["codes"])):
        row_codes = np.asarray(rows["codes"][i])
        check_codes("batch", str(rows["id"][i]), row_codes)
        frames = min(row_codes.shape[1], int(rows["num_frames"][i]))
        try:
            cut += windows(row_codes[:, :frames].astype(np.int64), int(rows["prompt_start"][i]),
                           int(rows["prompt_end"][i]), max_frames, mask_prompt)
        except TrainingDataError as exc:
            raise TrainingDataError(f"conversation {str(rows['id'][i])!r}: {exc}") from None
    codes = torch.from_numpy(np.stack([w.codes for w in cut]))
    return Batch(codes=codes, loss_frames=torch.from_numpy(np.stack([w.loss_frames for w in cut])),
                 real_frames=int((codes >= 0).any(dim=1).sum()))
