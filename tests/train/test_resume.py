"""Which checkpoint a resume starts from, and how a resumed run counts epochs: plain functions, no cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray.train
import safetensors.torch
import torch

from plexray.train import checkpoint, lora, resume, worker
from plexray.train.errors import NoIntactCheckpointError
from shards import cut_in_half


def _write_checkpoint(directory: Path, step: int) -> Path:
    """A LoRA training checkpoint's files, as checkpoint.save_checkpoint lays them out."""
    directory.mkdir(parents=True)
    (directory / lora.ADAPTER_CONFIG).write_text(json.dumps({"r": 4}))
    safetensors.torch.save_file({"lora_A.weight": torch.ones(4, 8) * step}, str(directory / lora.ADAPTER_WEIGHTS))
    state = {"progress": {"step": step, "skipped_steps": 0, "empty_steps": 0, "epoch": 0}, "lora": True}
    checkpoint.write_training_state(directory, {"state": {0: {"exp_avg": torch.ones(64)}}}, {"last_epoch": step},
                                    state)
    return directory


@pytest.fixture
def run(tmp_path) -> dict[int, Path]:
    """A run's checkpoints by step. Their names do not sort by step (Ray's are times; a clock can go back)."""
    names = {2: "checkpoint_c", 4: "checkpoint_a", 6: "checkpoint_b"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray's own file beside them
    return {step: _write_checkpoint(tmp_path / "run" / name, step) for step, name in names.items()}


def _latest(path: Path) -> ray.train.Checkpoint:
    return ray.train.Checkpoint.from_directory(str(path))


def test_an_intact_latest_checkpoint_is_used(run):
    with resume.newest_intact(_latest(run[6])) as found:
        assert (Path(found.path), found.state["progress"]["step"], found.damaged) == (run[6], 6, [])
        assert found.optim["scheduler"] == {"last_epoch": 6}
        assert (found.directory / lora.ADAPTER_WEIGHTS).is_file()
    assert found.log_line() == f"[train] resuming from {run[6]} (step 6)"


def test_a_cut_optimizer_state_passes_over_to_the_newest_intact_checkpoint_by_step(run):
    cut_in_half(run[6] / checkpoint.OPTIMIZER_FILE)
    with resume.newest_intact(_latest(run[6])) as found:
        assert (Path(found.path), found.state["progress"]["step"]) == (run[4], 4)
    [damaged] = found.damaged
    assert (damaged["checkpoint"], damaged["file"]) == (str(run[6]), "optimizer.pt")
    assert damaged["reason"].startswith("unreadable (RuntimeError: PytorchStreamReader failed reading zip archive")
    assert found.log_line() == (f"[train] resuming from {run[4]} (step 4); skipped damaged checkpoint {run[6]}: "
                                f"optimizer.pt {damaged['reason']}")


def test_every_file_a_resume_reads_is_checked_and_none_intact_fails_naming_each(run):
    cut_in_half(run[6] / lora.ADAPTER_WEIGHTS)
    (run[4] / lora.ADAPTER_CONFIG).unlink()
    (run[2] / checkpoint.STATE_FILE).write_text('{"progress": {}}')
    with pytest.raises(NoIntactCheckpointError) as error:
        with resume.newest_intact(_latest(run[6])):
            pytest.fail("resumed from a damaged checkpoint")
    assert str(error.value) == (
        f"no intact checkpoint to resume from: {run[2]}: trainer_state.json unreadable (ValueError: no "
        f"progress.step or lora in it); {run[6]}: adapter_model.safetensors unreadable (SafetensorError: Error "
        f"while deserializing header: incomplete metadata, file not fully covered); {run[4]}: adapter_config.json "
        f"missing")


def _steps(progress: worker.Progress, steps: int) -> list[tuple[int, int]]:
    """(epoch, micro-batch) of each of `steps` steps from `progress` on, one micro-batch a step."""
    batches = worker._batches(None, 0, 0, False, progress)
    return [(progress.epoch, next(batches)) for _ in range(steps)]


def test_a_resumed_run_numbers_epochs_and_takes_batches_as_an_uninterrupted_run(monkeypatch):
    monkeypatch.setattr(worker, "_epoch", lambda *args: iter("abc"))  # three micro-batches an epoch
    uninterrupted = _steps(worker.Progress(), 8)
    assert [epoch for epoch, _ in uninterrupted] == [0, 0, 0, 1, 1, 1, 2, 2]
    for stop in range(1, 8):  # a checkpoint after each step: at an epoch's last step (3, 6) and within one
        progress = worker.Progress()
        before = _steps(progress, stop)
        saved = worker.Progress(**json.loads(json.dumps(progress.__dict__)))  # as trainer_state.json holds it
        assert before + _steps(saved, 8 - stop) == uninterrupted, stop
