"""The driver side of `plexray train`: check everything, start Ray Train, write the run's summary.

    <output_dir>/<run_name>/            Ray Train's run directory (checkpoints, its own state)
        metrics.jsonl                   one record per step (validation metrics at evaluation steps)
        loss_curve.png                  total, text, semantic, acoustic loss: training and validation
        train_summary.json              the machine-readable outcome: status finished, diverged or failed
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from plexray.config import dump_config
from plexray.errors import PlexrayError
from plexray.settings import PlexrayConfig
from plexray.train import data, report
from plexray.train.errors import TrainingDivergedError
from plexray.train.worker import DIVERGED_METRIC, train_loop_per_worker

SUMMARY_FILE = "train_summary.json"


class TrainingRunError(PlexrayError):
    """Ray Train gave up on the run (worker failures beyond train.max_failures, or an error in a worker)."""


def run_training(config: PlexrayConfig) -> dict:
    """Train as configured; returns (and writes) the summary. Resumes if the run name has checkpoints."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    train = config.train
    storage = Path(train.output_dir).resolve()
    run_dir = storage / train.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # Everything that can be wrong with the input fails here, before a worker starts.
    train_ds, val_ds = data.open_splits(train.dataset, train.validation_fraction, min_rows=train.num_workers)
    # Read and split once, now, while no worker holds a CPU: on a small cluster, the workers would
    # otherwise hold every CPU and Ray Data's read tasks would wait forever. (Codes are small:
    # 100 s of conversation is 42 KB.)
    datasets = {"train": train_ds.materialize()} | ({"validation": val_ds.materialize()} if val_ds is not None else {})
    (run_dir / "config.yaml").write_text(dump_config(config))

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "run_dir": str(run_dir),
                           "has_validation": val_ds is not None},
        scaling_config=ray.train.ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                               resources_per_worker={"CPU": train.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=train.run_name, storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute="val_loss" if val_ds is not None else "loss",
                checkpoint_score_order="min"),
        ),
        datasets=datasets,
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors in its own types
        message = f"run {train.run_name!r} failed: {_cause(exc)} (checkpoints so far are kept in {run_dir})"
        summary = _summary(config, run_dir, report.read_metrics(run_dir), time.perf_counter() - started)
        (run_dir / SUMMARY_FILE).write_text(json.dumps(summary | {"status": "failed", "error": message}, indent=2))
        raise TrainingRunError(message) from exc

    records = report.read_metrics(run_dir)
    summary = _summary(config, run_dir, records, time.perf_counter() - started) | _outcome(result, records)
    if records:
        summary["loss_curve"] = str(report.plot_loss_curves(records, run_dir / report.CURVE_FILE))
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    if DIVERGED_METRIC in (result.metrics or {}):
        raise TrainingDivergedError(f"{result.metrics[DIVERGED_METRIC]} (summary: {run_dir / SUMMARY_FILE})")
    if train.evaluate_behaviour:
        summary["behaviour"] = _evaluate_behaviour(config, summary, run_dir)
        (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _evaluate_behaviour(config: PlexrayConfig, summary: dict, run_dir: Path) -> dict:
    """train.evaluate_behaviour: the base model against the run's best (else latest) checkpoint, a LoRA
    adapter evaluated merged into the base, on the serving engine (plexray.evaluation)."""
    from plexray.evaluation.pipeline import digest, evaluate_behaviour_once

    tuned = summary["best_checkpoint"] or summary["latest_checkpoint"]
    output_dir = run_dir / "behaviour" / f"step-{summary['steps']}"
    report = evaluate_behaviour_once(config, {"base": config.model.checkpoint, "tuned": tuned}, output_dir)
    return digest(report, output_dir)


def _cause(exc: BaseException) -> str:
    """The error a worker raised, in one line, found inside Ray's wrappers: a WorkerGroupError holds each
    rank's error (`worker_failures`), wrapped with its traceback text (whose `_base_exc` is the error)."""
    failures = getattr(exc, "worker_failures", None)
    if failures:
        exc = failures[min(failures)]
    exc = getattr(exc, "_base_exc", exc)
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _summary(config: PlexrayConfig, run_dir: Path, records: list[dict], seconds: float) -> dict:
    """What a run's summary says whatever its outcome (the steps as its metrics record them)."""
    last = records[-1] if records else {}
    return {
        "run_dir": str(run_dir),
        "steps": last.get("step", 0),
        "max_steps": config.train.max_steps,
        "num_workers": config.train.num_workers,
        "lora": config.train.lora.enabled,
        "wall_seconds": round(seconds, 1),
        "metrics_file": str(run_dir / report.METRICS_FILE),
    }


def _outcome(result, records: list[dict]) -> dict:
    """What a run that Ray saw to its end adds: its status, losses, checkpoints and throughput."""
    last = records[-1] if records else {}
    evaluations = [r for r in records if "val_loss" in r]
    throughput = [r["frames_per_s"] for r in records if "frames_per_s" in r]
    best = min(result.best_checkpoints or [], key=lambda pair: pair[1].get("val_loss", pair[1].get("loss")),
               default=None)
    return {
        "status": "diverged" if DIVERGED_METRIC in (result.metrics or {}) else "finished",
        "trainable_parameters": last.get("trainable_parameters"),
        "total_parameters": last.get("total_parameters"),
        "skipped_steps": last.get("skipped_steps", 0),
        "empty_steps": last.get("empty_steps", 0),
        # the resume that the last step's attempt started from (worker.py), and the damaged checkpoints it passed over
        "resumed_from": last.get("resumed_from"),
        "damaged_checkpoints": last.get("damaged_checkpoints", []),
        "final_train": {k: last[k] for k in ("loss", "text_loss", "semantic_loss", "acoustic_loss") if k in last},
        "final_validation": {k: v for k, v in (evaluations[-1] if evaluations else {}).items() if k.startswith("val_")},
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "best_checkpoint": best[0].path if best else None,
        "best_val_loss": best[1].get("val_loss") if best else None,
        "frames_per_s_per_worker": sum(throughput) / len(throughput) if throughput else None,
        "peak_memory_mb": max((r.get("peak_memory_mb", 0) for r in records), default=None),
    }
