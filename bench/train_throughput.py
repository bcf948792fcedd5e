"""Training throughput: frames per second per worker and peak memory, measured in one run.

    .venv/bin/python bench/train_throughput.py [--steps N] [--max-frames N]

On the demo model (Ray Train on a local cluster, CPU): LoRA vs full fine-tuning with 1 worker, and
LoRA with 1 vs 2 FSDP workers; the baseline of each ratio is measured in the same run. When a GPU
is present, also the 7B PersonaPlex architecture (random init, bf16, LoRA rank 128, gradient
checkpointing) at 2048-frame sequences on one GPU, beside moshi-finetune's published 1xH100 figure.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests" / "train"))  # the shards helper the training tests use

# moshi-finetune README: 1x H100, LoRA rank 128, batch 16 x 100 s: about 12k tokens/s, 39.6 GB peak.
MOSHI_FINETUNE_H100 = {"tokens_per_s": 12_000, "peak_memory_gb": 39.6, "lora_rank": 128, "batch": "16 x 100 s"}


def demo_runs(workdir: Path, steps: int, max_frames: int) -> dict:
    import ray

    from plexray.config import load_config
    from plexray.model import load_model
    from plexray.settings import PlexrayConfig
    from plexray.train.report import read_metrics
    from plexray.train.run import run_training
    from shards import conversation_row, train_overrides, write_shards

    bundle = load_model("demo")
    rows = [conversation_row(bundle, i, frames=max_frames) for i in range(8)]
    dataset = write_shards(workdir / "data", rows)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    results = {}
    for name, lora, workers in (("lora_1_worker", True, 1), ("full_1_worker", False, 1), ("lora_2_workers", True, 2)):
        config = load_config(PlexrayConfig, None, train_overrides(dataset, workdir / "runs", **{
            "train.run_name": name, "train.lora.enabled": lora, "train.num_workers": workers,
            "train.batch_size": 2, "train.max_frames": max_frames, "train.max_steps": steps,
            "train.eval_every": steps, "train.validation_fraction": 0.0}))
        summary = run_training(config)
        records = read_metrics(Path(summary["run_dir"]))[1:]  # step 1 pays one-off costs
        fps = sum(r["frames_per_s"] for r in records) / len(records)
        results[name] = {"frames_per_s_per_worker": round(fps, 1), "frames_per_s_total": round(fps * workers, 1),
                         "peak_memory_mb_per_worker": round(summary["peak_memory_mb"], 1),
                         "trainable_parameters": summary["trainable_parameters"]}
    ray.shutdown()
    lora1, full1, lora2 = results["lora_1_worker"], results["full_1_worker"], results["lora_2_workers"]
    results["ratios"] = {
        "lora_vs_full_frames_per_s": round(lora1["frames_per_s_per_worker"] / full1["frames_per_s_per_worker"], 3),
        "lora_vs_full_peak_memory": round(lora1["peak_memory_mb_per_worker"] / full1["peak_memory_mb_per_worker"], 3),
        "two_vs_one_worker_total_frames_per_s": round(lora2["frames_per_s_total"] / lora1["frames_per_s_total"], 3),
    }
    return results


def gpu_7b(steps: int = 4, frames: int = 2048, batch: int = 1) -> dict:
    """The 7B PersonaPlex architecture, random init, on one GPU: LoRA rank 128, bf16, checkpointing."""
    from plexray.model import architectures
    from plexray.model.architectures import build_lm
    from plexray.train import lora
    from plexray.train.config import LoraConfig, OptimConfig
    from plexray.train.data import Batch
    from plexray.train.loop import LossSetup, train_step
    from plexray.train.loss import PRESETS
    from plexray.train.optim import build_optimizer

    device = torch.device("cuda")
    lm = build_lm(architectures.full_lm_kwargs("personaplex"), device=device, dtype=torch.bfloat16,
                  gradient_checkpointing=True).train()
    model = lora.apply_lora(lm, LoraConfig(rank=128, alpha=256), seed=0)
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=2e-6), total_steps=steps)
    setup = LossSetup(PRESETS["personaplex"], list(lm.delays), lm.dep_q)
    codes = torch.randint(0, 2048, (batch, 17, frames))
    codes[:, 0] = torch.randint(0, 32000, (batch, frames))
    micro = Batch(codes=codes, loss_frames=torch.ones(batch, frames, dtype=torch.bool), real_frames=batch * frames)
    train_step(model, optimizer, scheduler, [micro], setup, device, 1.0)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    begin = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, scheduler, [micro], setup, device, 1.0)
    torch.cuda.synchronize()
    fps = steps * batch * frames / (time.perf_counter() - begin)
    return {"device": torch.cuda.get_device_name(), "frames": frames, "batch": batch, "lora_rank": 128,
            "frames_per_s": round(fps, 1), "tokens_per_s_17_streams": round(fps * 17, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "moshi_finetune_published_1xH100": MOSHI_FINETUNE_H100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-frames", type=int, default=96)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plexray-bench-") as tmp:
        report = {"benchmark": "train_throughput", "demo_model_cpu": demo_runs(Path(tmp), args.steps, args.max_frames)}
    report["gpu_7b"] = gpu_7b() if torch.cuda.is_available() else None
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
