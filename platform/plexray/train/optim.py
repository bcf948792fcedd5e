"""AdamW with linear warmup then cosine decay; the depformer may get its own peak learning rate."""

from __future__ import annotations

import math

import torch

from plexray.train.config import OptimConfig
from plexray.train.lora import is_depformer_parameter


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate before optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, config: OptimConfig, total_steps: int):
    """-> (AdamW over the trainable parameters, LambdaLR scheduler)."""
    groups: dict[bool, list[torch.nn.Parameter]] = {False: [], True: []}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups[is_depformer_parameter(name)].append(parameter)
    depformer_lr = config.depformer_lr or config.lr
    param_groups = [{"params": params, "lr": lr} for params, lr in
                    ((groups[False], config.lr), (groups[True], depformer_lr)) if params]
    optimizer = torch.optim.AdamW(param_groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_steps, total_steps, config.min_lr_ratio))
    return optimizer, scheduler
