"""Ray Train runs on the session's local cluster: FSDP equivalence, worker failure, driver restart,
then evaluation and merge of what the run wrote (through the CLI), then reruns whose checkpoints are damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plexray.cli import main
from plexray.config import load_config
from plexray.model import load_model
from plexray.settings import PlexrayConfig
from plexray.train.checkpoint import OPTIMIZER_FILE, STATE_FILE
from plexray.train.report import METRICS_FILE, read_metrics
from plexray.train.resume import CHECKPOINT_PREFIX
from plexray.train.run import SUMMARY_FILE, TrainingRunError, run_training
from shards import conversation_row, cut_in_half, train_overrides, write_shards


def _config(dataset: Path, output: Path, **values) -> PlexrayConfig:
    return load_config(PlexrayConfig, None, train_overrides(dataset, output, **values))


def _logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / METRICS_FILE).read_text().splitlines()]


def _checkpoints_by_step(run_dir: Path) -> list[Path]:
    """The run's checkpoints in storage, newest first."""
    return sorted((path for path in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if path.is_dir()), reverse=True,
                  key=lambda path: json.loads((path / STATE_FILE).read_text())["progress"]["step"])


def test_two_fsdp_workers_match_one_worker_on_the_same_global_batch(ray_cluster, demo_bundle, tmp_path):
    # Four conversations = one global batch: every step sees all of them, however they are split.
    dataset = write_shards(tmp_path / "data", [conversation_row(demo_bundle, i, frames=20) for i in range(4)])
    curves = {}
    for workers in (1, 2):
        config = _config(dataset, tmp_path / "runs", **{
            "train.run_name": f"workers-{workers}", "train.num_workers": workers, "train.batch_size": 4 // workers,
            "train.validation_fraction": 0.0, "train.max_steps": 3, "train.eval_every": 3})
        summary = run_training(config)
        assert summary["status"] == "finished" and summary["steps"] == 3
        records = read_metrics(Path(summary["run_dir"]))
        assert [r["epoch"] for r in records] == [0, 1, 2]  # one global batch an epoch
        curves[workers] = [r["loss"] for r in records]
    assert curves[1][0] != pytest.approx(curves[1][-1], rel=1e-6)  # the model did move
    assert curves[2] == pytest.approx(curves[1], rel=1e-4)


def test_resume_after_worker_death_and_driver_restart_then_evaluate_merge_and_damaged_checkpoints(
        ray_cluster, train_set, tmp_path):
    config = _config(train_set, tmp_path / "runs", **{
        "train.run_name": "resumable", "train.max_steps": 5, "train.fail_at_step": 4, "train.max_failures": 1})
    summary = run_training(config)
    run_dir = Path(summary["run_dir"])
    # The worker process died at step 4 of its first attempt; the second attempt went on from the
    # step-2 checkpoint (had it started over, it would have logged step 1 again, and died again).
    assert summary["status"] == "finished" and summary["steps"] == 5
    assert _logged_steps(run_dir) == [1, 2, 3, 3, 4, 5]
    assert "val_loss" in read_metrics(run_dir)[-1] and summary["best_checkpoint"]
    assert Path(summary["loss_curve"]).stat().st_size > 0
    assert json.loads((run_dir / "train_summary.json").read_text())["steps"] == 5

    # The newest checkpoint cut short, then a new driver run with the same name: it passes over the damaged
    # checkpoint to the newest intact one, says so, and ends with the behavioural comparison of base and
    # best checkpoint (train.evaluate_behaviour; one conversation).
    newest, previous = _checkpoints_by_step(run_dir)[:2]
    resumed_at = json.loads((previous / STATE_FILE).read_text())["progress"]["step"]
    cut_in_half(newest / OPTIMIZER_FILE)
    longer = _config(train_set, tmp_path / "runs", **{
        "train.run_name": "resumable", "train.max_steps": 6, "train.evaluate_behaviour": True,
        "evaluation.test_set.conversations": "{turn_taking: 1}"})
    longer_summary = run_training(longer)
    assert longer_summary["status"] == "finished" and longer_summary["steps"] == 6
    assert longer_summary["resumed_from"] == str(previous)
    [damaged] = longer_summary["damaged_checkpoints"]
    assert (damaged["checkpoint"], damaged["file"]) == (str(newest), OPTIMIZER_FILE)
    assert "PytorchStreamReader failed reading zip archive" in damaged["reason"]
    assert _logged_steps(run_dir) == [1, 2, 3, 3, 4, 5, *range(resumed_at + 1, 7)]
    behaviour = json.loads((run_dir / "train_summary.json").read_text())["behaviour"]
    assert behaviour == longer_summary["behaviour"] and behaviour["scored"] == {"base": 1, "tuned": 1}
    report = json.loads(Path(behaviour["json"]).read_text())
    assert report["checkpoints"] == {"base": "demo", "tuned": longer_summary["best_checkpoint"]}
    # Epochs as an uninterrupted run numbers them, over both resumes: 9 of the 12 conversations train
    # (the validation split is by id hash), 5 micro-batches of 2 an epoch; step 5 ends epoch 0.
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0 if r["step"] <= 5 else 1 for r in read_metrics(run_dir)]

    best = Path(json.loads((run_dir / "train_summary.json").read_text())["best_checkpoint"])
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.pt"} <= {p.name for p in best.iterdir()}
    report = tmp_path / "eval.json"
    overrides = [item for pair in zip(["--set"] * 10, train_overrides(train_set, tmp_path / "runs")) for item in pair]
    assert main(["evaluate", "loss", "--checkpoint", str(best), "--dataset", str(train_set), "--output", str(report),
                 *overrides]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["split"] == "validation" and metrics["conversations"] > 0
    assert {"loss", "text_loss", "semantic_loss", "acoustic_loss", "text_accuracy", "semantic_accuracy",
            "acoustic_accuracy"} <= set(metrics)

    assert main(["merge", str(best), str(tmp_path / "merged"), *overrides]) == 0
    assert load_model(str(tmp_path / "merged")).family == "personaplex"

    # Every checkpoint damaged: one line naming each, and a summary that says the run failed.
    for path in _checkpoints_by_step(run_dir):
        cut_in_half(path / OPTIMIZER_FILE)
    with pytest.raises(TrainingRunError) as error:
        run_training(_config(train_set, tmp_path / "runs", **{"train.run_name": "resumable", "train.max_steps": 7,
                                                              "train.max_failures": 0}))
    message = str(error.value)
    assert message.startswith("run 'resumable' failed: NoIntactCheckpointError: no intact checkpoint to resume from")
    assert "\n" not in message and all(f"{path}: optimizer.pt unreadable" in message
                                       for path in _checkpoints_by_step(run_dir))
    failed = json.loads((run_dir / SUMMARY_FILE).read_text())
    assert (failed["status"], failed["error"], failed["steps"]) == ("failed", message, 6)
