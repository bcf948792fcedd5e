"""What a run leaves for people and programs: metrics.jsonl, a loss-curve PNG, peak memory."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import torch

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "loss_curve.png"
CURVES = ("loss", "text_loss", "semantic_loss", "acoustic_loss")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on a GPU; the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / METRICS_FILE, "a") as stream:
        stream.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """One record per step; after a resume, the records of the attempt that went on win."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]] = by_step.get(record["step"], {}) | record
    return [by_step[step] for step in sorted(by_step)]


def plot_loss_curves(records: list[dict], path: Path) -> Path:
    """Training (lines) and validation (markers) loss: total and the text, semantic, acoustic components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for axis, name in zip(axes, CURVES):
        train = [(r["step"], r[name]) for r in records if name in r]
        val = [(r["step"], r[f"val_{name}"]) for r in records if f"val_{name}" in r]
        if train:
            axis.plot(*zip(*train), label="train")
        if val:
            axis.plot(*zip(*val), "o-", label="validation")
        axis.set_title(name)
        axis.set_xlabel("step")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
