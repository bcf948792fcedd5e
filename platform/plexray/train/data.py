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

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
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

    train = dataset.filter(lambda row: not held_out(row["id"]))
    validation = dataset.filter(lambda row: held_out(row["id"])) if cutoff is not None else None
    # Sizes from the ids already read (counting the filtered datasets would read every shard twice more).
    validation_rows = sum(map(held_out, ids))
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


@dataclasses.dataclass
class Batch:
    """A micro-batch cropped or padded to a fixed number of frames."""

    codes: torch.Tensor  # [B, 17, T] long, -1 = padding / no token
    loss_frames: torch.Tensor  # [B, T] bool: frames that may carry loss (not padding, not masked prompt)
    real_frames: int  # frames of actual conversation in the batch (for throughput)


def collate(rows: dict[str, np.ndarray], max_frames: int, mask_prompt: bool) -> Batch:
    """Numpy batch from Ray Data -> Batch. Conversations longer than `max_frames` keep their first
    frames: the prompt phase comes first, and the conversation after it needs it as context."""
    size = len(rows["codes"])
    codes = torch.full((size, NUM_STREAMS, max_frames), -1, dtype=torch.long)
    loss_frames = torch.zeros(size, max_frames, dtype=torch.bool)
    real = 0
    for i in range(size):
        row_codes = np.asarray(rows["codes"][i])
        check_codes("batch", str(rows["id"][i]), row_codes)
        frames = min(row_codes.shape[1], int(rows["num_frames"][i]), max_frames)
        codes[i, :, :frames] = torch.from_numpy(row_codes[:, :frames].astype(np.int64))
        loss_frames[i, :frames] = True
        if mask_prompt:
            loss_frames[i, int(rows["prompt_start"][i]):int(rows["prompt_end"][i])] = False
        real += frames
    return Batch(codes=codes, loss_frames=loss_frames, real_frames=real)
