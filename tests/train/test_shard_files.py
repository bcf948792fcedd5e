"""Damaged files among the training shards: one error naming the file, before Ray reads anything."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from plexray.train.data import open_splits, shard_files
from plexray.train.errors import TrainingDataError


def _write_good_shard(path):
    pq.write_table(pa.table({"id": ["a", "b"], "num_frames": [3, 4]}), path)


def _damage(path, how: str) -> None:
    if how == "truncated":  # a copy or a write cut short: the footer, at the end, is gone
        _write_good_shard(path)
        path.write_bytes(path.read_bytes()[:-20])
    else:  # something else saved under a shard's name
        path.write_text("id,codes\nx,1\n")


@pytest.mark.parametrize("how", ["truncated", "not Parquet"])
def test_a_damaged_shard_is_named_in_one_line(tmp_path, how):
    (tmp_path / "shards").mkdir()
    _write_good_shard(tmp_path / "shards" / "part-00000.parquet")
    damaged = tmp_path / "shards" / "part-00001.parquet"
    _damage(damaged, how)
    with pytest.raises(TrainingDataError) as error:
        shard_files(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{damaged}: not a readable Parquet file") and "\n" not in message, message
    with pytest.raises(TrainingDataError, match="not a readable Parquet file"):  # the trainer's entry point
        open_splits(tmp_path, validation_fraction=0.0)
