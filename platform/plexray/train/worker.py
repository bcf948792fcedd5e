"""The Ray Train worker: a thin shell that feeds Ray's dataset shards to `loop.train_step`, reports
metrics and checkpoints to Ray Train, and resumes from the checkpoint Ray hands back.

Ray restarts workers from the latest registered checkpoint after a failure (`FailureConfig`),
and a new driver run with the same run name finds the same checkpoints in storage. A resume starts
from the newest intact checkpoint of the run (resume.py: a damaged latest one is passed over), and
every step record of a resumed attempt says which (`resumed_from`, `damaged_checkpoints`).

Epochs: `Progress` counts the micro-batches taken of the current epoch, and moves to the next epoch
as soon as an epoch's last micro-batch is taken, so a checkpoint written at an epoch's last step
records the next epoch. A resumed run skips the micro-batches its epoch had already given, so it
numbers its steps by epoch as an uninterrupted run would (and, where the shard's order is the same,
trains on the same batches). A step's epoch is that of its first micro-batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import time
from pathlib import Path

import ray.train
import torch

from plexray.config import dump_config
from plexray.settings import PlexrayConfig
from plexray.train import checkpoint, distributed, lora, report, resume
from plexray.train.data import collate, window_frames
from plexray.train.errors import TrainingDivergedError
from plexray.train.loop import LossSetup, NonFiniteGuard, evaluate, train_step
from plexray.train.loss import weights_from_config
from plexray.train.optim import build_optimizer

DIVERGED_METRIC = "diverged"


@dataclasses.dataclass
class Progress:
    """Where the run stands; saved in every checkpoint."""

    step: int = 0
    skipped_steps: int = 0
    empty_steps: int = 0  # global batches without a single loss token (cropped inside the prompt phase)
    epoch: int = 0
    epoch_batches: int = 0  # micro-batches of this epoch taken (by the steps done)


def train_loop_per_worker(loop_config: dict) -> None:
    config = PlexrayConfig.model_validate(loop_config["config"])
    train = config.train
    run_dir = Path(loop_config["run_dir"])
    context = ray.train.get_context()
    is_rank0 = context.get_world_rank() == 0
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    torch.manual_seed(train.seed)

    latest = ray.train.get_checkpoint()
    bundle = config.model.load(gradient_checkpointing=train.gradient_checkpointing)
    lm = bundle.lm.train()
    frames = window_frames(train.max_frames, lm)  # as evaluate.py: a window never exceeds the LM context
    progress, optim_state, resume_record = Progress(), None, {}
    if latest is not None:
        with resume.newest_intact(latest) as found:
            model = checkpoint.load_weights(lm, found.directory, trainable=True)
        progress, optim_state = Progress(**found.state["progress"]), found.optim
        resume_record = {"resumed_from": found.path, "damaged_checkpoints": found.damaged}
        if is_rank0:
            print(found.log_line(), flush=True)
    elif train.lora.enabled:
        model = lora.apply_lora(lm, train.lora, train.seed)
    else:
        model = lm
    trainable, total = lora.trainable_parameters(model)
    wrapped = distributed.wrap_model(model, device, fsdp=train.fsdp)
    optimizer, scheduler = build_optimizer(wrapped, train.optim, train.max_steps)
    if optim_state is not None:
        distributed.load_optimizer_state(wrapped, optimizer, optim_state["optimizer"])
        scheduler.load_state_dict(optim_state["scheduler"])

    setup = LossSetup(weights_from_config(train.loss), list(lm.delays), lm.dep_q)
    autocast = distributed.autocast_dtype(device.type, train.bf16)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation") if loop_config["has_validation"] else None
    batches = _batches(train_shard, train.batch_size, frames, train.loss.mask_prompt, progress)
    guard = NonFiniteGuard(train.max_nonfinite_steps, total=progress.skipped_steps)
    started_fresh = latest is None

    while progress.step < train.max_steps:
        step = progress.step + 1
        if train.fail_at_step == step and started_fresh and is_rank0:
            # Testing aid: the worker process dies mid-run (only on an attempt that did not resume),
            # once Ray's controller has registered a checkpoint to resume from.
            _wait_for_registered_checkpoint(run_dir)
            os._exit(1)
        epoch = progress.epoch
        micro_batches = [next(batches) for _ in range(train.grad_accumulation)]
        begin = time.perf_counter()
        result = train_step(wrapped, optimizer, scheduler, micro_batches, setup, device, train.optim.grad_clip,
                            autocast)
        seconds = time.perf_counter() - begin
        if result.empty:
            progress.empty_steps += 1
        try:
            guard.record(result.applied or result.empty, step)
        except TrainingDivergedError as exc:
            progress.skipped_steps = guard.total
            ray.train.report({"step": step, DIVERGED_METRIC: str(exc), "skipped_steps": guard.total})
            return  # not an exception: Ray would retry a diverged run from its last checkpoint
        progress.step, progress.skipped_steps = step, guard.total
        metrics = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   "grad_norm": result.grad_norm, "skipped_steps": guard.total, "empty_steps": progress.empty_steps,
                   "frames_per_s": result.real_frames / seconds,
                   "peak_memory_mb": report.peak_memory_mb(device), "trainable_parameters": trainable,
                   "total_parameters": total, **result.stats.metrics(), **resume_record}
        ckpt = None
        if step % train.eval_every == 0 or step == train.max_steps:
            if val_shard is not None:
                val_batches = itertools.islice(
                    _epoch(val_shard, train.batch_size, frames, train.loss.mask_prompt), train.eval_batches)
                metrics.update({f"val_{k}": v for k, v in
                                evaluate(wrapped, val_batches, setup, device, autocast).metrics().items()})
            ckpt = _save_checkpoint(wrapped, optimizer, scheduler, progress, metrics, config)
        if is_rank0:
            report.append_metrics(run_dir, metrics)
            print(_progress_line(metrics, train.max_steps), flush=True)
        if ckpt is None:
            ray.train.report(metrics)
        else:
            with ckpt as directory:
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory)
                                 if directory else None)


def _wait_for_registered_checkpoint(run_dir: Path, timeout_s: float = 300.0) -> None:
    """Reports reach Ray's controller asynchronously; it records registered checkpoints in this file."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if json.loads(snapshot.read_text()).get("checkpoint_results"):
                return
        except (OSError, json.JSONDecodeError):  # not written yet, or caught mid-write
            pass
        time.sleep(0.2)


def _progress_line(metrics: dict, max_steps: int) -> str:
    line = (f"[train] step {metrics['step']}/{max_steps}: loss {metrics['loss']:.4f} (text {metrics['text_loss']:.3f}, "
            f"semantic {metrics['semantic_loss']:.3f}, acoustic {metrics['acoustic_loss']:.3f})")
    if "val_loss" in metrics:
        line += f", validation loss {metrics['val_loss']:.4f}"
    return line + f", {metrics['frames_per_s']:.0f} frames/s"


def _save_checkpoint(wrapped, optimizer, scheduler, progress: Progress, metrics: dict, config: PlexrayConfig):
    """A context manager yielding the checkpoint directory on rank 0 (None on other ranks), removed
    after reporting. Every rank calls this: gathering the weights is a collective."""
    state = {"progress": dataclasses.asdict(progress), "metrics": metrics, "base_model": config.model.checkpoint,
             "lora": config.train.lora.enabled, "config": dump_config(config)}
    staging = checkpoint.save_checkpoint(wrapped, optimizer, scheduler, state, config.train.lora.enabled)
    return staging if staging is not None else _NoDirectory()


class _NoDirectory:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _epoch(shard, batch_size: int, max_frames: int, mask_prompt: bool):
    for rows in shard.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield collate(rows, max_frames, mask_prompt)


def _batches(shard, batch_size: int, max_frames: int, mask_prompt: bool, progress: Progress):
    """Micro-batches forever, epoch after epoch, counted in `progress` (see the module's docstring);
    the first epoch skips the micro-batches `progress` says were taken."""
    skip = progress.epoch_batches
    while True:
        epoch = itertools.islice(_epoch(shard, batch_size, max_frames, mask_prompt), skip, None)
        skip = 0
        batch = next(epoch, None)
        while batch is not None:
            following = next(epoch, None)  # one ahead: the epoch moves on with its last batch
            progress.epoch_batches += 1
            if following is None:
                progress.epoch, progress.epoch_batches = progress.epoch + 1, 0
            yield batch
            batch = following

