"""Which checkpoint a resumed run starts from: the newest intact one of the run.

Ray hands a restarted worker (or a new driver run of the same name) the run's latest registered
checkpoint. If a file of it is cut short or missing (a full disk, a copy that broke off), loading it
fails on every retry, and the intact checkpoints before it are never tried. So a resume looks at all
of the run's checkpoints in storage, through the filesystem Ray stores them with (local or remote),
newest first by the step in their trainer state, and starts from the first whose every file reads
whole; the damaged ones are named, with the file and the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs
import ray.train

from plexray.train import checkpoint
from plexray.train.errors import DamagedCheckpointError, NoIntactCheckpointError

CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train names a run's checkpoint directories checkpoint_<time>


@dataclasses.dataclass
class Resume:
    path: str  # the checkpoint in storage
    directory: Path  # a local copy of it (the checkpoint itself on a local filesystem), while in use
    state: dict  # trainer_state.json
    optim: dict  # optimizer.pt: {"optimizer", "scheduler"}
    damaged: list[dict]  # {"checkpoint", "file", "reason"} of each damaged checkpoint passed over

    def log_line(self) -> str:
        skipped = "".join(f"; skipped damaged checkpoint {d['checkpoint']}: {d['file']} {d['reason']}"
                          for d in self.damaged)
        return f"[train] resuming from {self.path} (step {self.state['progress']['step']}){skipped}"


@contextlib.contextmanager
def newest_intact(latest: ray.train.Checkpoint) -> Iterator[Resume]:
    """The newest intact checkpoint of the run `latest` belongs to, read and held locally while the
    block runs; NoIntactCheckpointError (one line, naming each checkpoint and why) if there is none."""
    candidates, damaged = _by_step(latest.filesystem, posixpath.dirname(latest.path))
    for path in candidates:
        with ray.train.Checkpoint(path, filesystem=latest.filesystem).as_directory() as directory:
            try:
                state, optim = checkpoint.read_training_state(Path(directory))
            except DamagedCheckpointError as exc:
                damaged.append(_damage(path, exc))
                continue
            yield Resume(path, Path(directory), state, optim, damaged)
            return
    raise NoIntactCheckpointError("no intact checkpoint to resume from: " + "; ".join(
        f"{d['checkpoint']}: {d['file']} {d['reason']}" for d in damaged))


def _by_step(fs: pyarrow.fs.FileSystem, run_path: str) -> tuple[list[str], list[dict]]:
    """-> (the run's checkpoints, newest first by step; those whose trainer state cannot be read)."""
    steps, damaged = {}, []
    for info in fs.get_file_info(pyarrow.fs.FileSelector(run_path)):
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith(CHECKPOINT_PREFIX):
            continue
        try:
            steps[info.path] = _step(fs, info.path)
        except DamagedCheckpointError as exc:
            damaged.append(_damage(info.path, exc))
    return sorted(steps, key=steps.get, reverse=True), damaged


def _step(fs: pyarrow.fs.FileSystem, path: str) -> int:
    try:
        with fs.open_input_stream(posixpath.join(path, checkpoint.STATE_FILE)) as stream:
            text = stream.read()
    except FileNotFoundError:
        raise DamagedCheckpointError(checkpoint.STATE_FILE, "missing") from None
    try:
        return checkpoint.parse_state(text.decode())["progress"]["step"]
    except Exception as exc:  # whatever a garbled file makes the parser raise
        raise DamagedCheckpointError(checkpoint.STATE_FILE, checkpoint.unreadable(exc)) from exc


def _damage(path: str, exc: DamagedCheckpointError) -> dict:
    return {"checkpoint": path, "file": exc.file, "reason": exc.reason}
