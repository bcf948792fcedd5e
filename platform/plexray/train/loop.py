"""One optimizer step and one evaluation pass: plain functions, the same on 1 or N workers.

Every micro-batch of a step (on every worker) is normalised by the weight sums of the whole
global batch, so N workers with gradient accumulation compute exactly the loss and gradient of
one big batch on one worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import typing as tp

import torch

from plexray.train import distributed
from plexray.train.data import Batch
from plexray.train.errors import TrainingDivergedError
from plexray.train.loss import LossStats, LossWeights, compute_loss, token_weights, weight_sums


@dataclasses.dataclass(frozen=True)
class LossSetup:
    """What the loss needs besides the batch."""

    weights: LossWeights
    delays: list[int]
    dep_q: int


@dataclasses.dataclass
class StepResult:
    stats: LossStats  # summed over the global batch
    grad_norm: float
    applied: bool  # False: the step was skipped (see `empty`, else the loss or gradient was not finite)
    real_frames: int  # frames of conversation this worker processed
    empty: bool = False  # no token of the global batch carried loss (e.g. all cropped inside the prompt phase)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def batch_loss(model: torch.nn.Module, batch: Batch, setup: LossSetup, device: torch.device,
               normalizer: torch.Tensor | None = None, autocast: torch.dtype | None = None):
    codes = batch.codes.to(device)
    text_w, audio_w = token_weights(codes, batch.loss_frames.to(device), setup.weights, setup.delays, setup.dep_q)
    with _autocast(device, autocast):
        output = model(codes)
    return compute_loss(output, codes, text_w, audio_w, None if normalizer is None else normalizer.to(device))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, micro_batches: list[Batch],
               setup: LossSetup, device: torch.device, grad_clip: float,
               autocast: torch.dtype | None = None) -> StepResult:
    model.train()
    local_sums = torch.zeros(2, dtype=torch.float64)
    for batch in micro_batches:
        local_sums += weight_sums(*token_weights(batch.codes, batch.loss_frames, setup.weights,
                                                 setup.delays, setup.dep_q))
    normalizer = distributed.all_reduce_sum(local_sums, device)
    frames = sum(b.real_frames for b in micro_batches)
    if float(normalizer.sum()) == 0:  # nothing to learn from: no update (weight decay would still act)
        return StepResult(stats=LossStats.zeros(), grad_norm=0.0, applied=False, real_frames=frames, empty=True)
    # Data-parallel wrappers average gradients over workers; the loss is already a global mean.
    scale = distributed.world_size()
    stats = LossStats.zeros()
    for batch in micro_batches:
        result = batch_loss(model, batch, setup, device, normalizer, autocast)
        (result.total * scale).backward()
        stats = stats + result.stats
    stats = LossStats(distributed.all_reduce_sum(stats.values, device))
    grad_norm = float(distributed.clip_gradients(model, grad_clip))
    applied = math.isfinite(stats.metrics()["loss"]) and math.isfinite(grad_norm)
    if applied:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(stats=stats, grad_norm=grad_norm, applied=applied, real_frames=frames)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: tp.Iterable[Batch], setup: LossSetup, device: torch.device,
             autocast: torch.dtype | None = None) -> LossStats:
    """Loss sums over every batch (and every worker: each must pass the same number of batches)."""
    model.eval()
    stats = LossStats.zeros()
    for batch in batches:
        stats = stats + batch_loss(model, batch, setup, device, autocast=autocast).stats
    return LossStats(distributed.all_reduce_sum(stats.values, device))


@dataclasses.dataclass
class NonFiniteGuard:
    """Counts skipped steps; too many in a row means the run has diverged."""

    max_consecutive: int
    consecutive: int = 0
    total: int = 0

    def record(self, applied: bool, step: int) -> None:
        if applied:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.max_consecutive:
            raise TrainingDivergedError(
                f"step {step}: the loss or gradient was not finite for {self.consecutive} steps in a row "
                f"({self.total} skipped in all); stopping. The last good checkpoint is kept; lower "
                f"train.optim.lr or check the data")
