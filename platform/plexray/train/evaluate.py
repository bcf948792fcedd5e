"""`plexray evaluate`: loss components and accuracies of any checkpoint on any training set.

The checkpoint is a training checkpoint (an adapter, or full LM weights, applied to the base
model of the `model` config section), a standalone checkpoint directory (e.g. a merged one), or
nothing (the base model itself).
"""

from __future__ import annotations

import json
import typing as tp
from pathlib import Path

import torch
from tqdm import tqdm

from plexray.model.config import ModelConfig
from plexray.settings import PlexrayConfig
from plexray.train import checkpoint, data
from plexray.train.loop import LossSetup, evaluate
from plexray.train.loss import weights_from_config

Split = tp.Literal["validation", "train", "all"]


def load_for_evaluation(model_config: ModelConfig, checkpoint_dir: Path | None) -> torch.nn.Module:
    if checkpoint_dir is not None and checkpoint.is_standalone(Path(checkpoint_dir)):
        return model_config.model_copy(update={"checkpoint": str(checkpoint_dir)}).load().lm
    bundle = model_config.load()
    if checkpoint_dir is None:
        return bundle.lm
    return checkpoint.load_weights(bundle.lm, Path(checkpoint_dir))


def evaluate_checkpoint(config: PlexrayConfig, checkpoint_dir: Path | None, dataset: str, split: Split) -> dict:
    train = config.train
    model = load_for_evaluation(config.model, checkpoint_dir)
    training, validation = data.open_splits(dataset, train.validation_fraction if split != "all" else 0.0)
    chosen = {"train": training, "validation": validation, "all": training}[split]
    if chosen is None:
        raise data.TrainingDataError(f"{dataset}: no validation split (train.validation_fraction is 0)")
    device = torch.device(config.model.device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    setup = LossSetup(weights_from_config(train.loss), list(base.delays), base.dep_q)
    rows = chosen.count()
    frames = data.window_frames(train.max_frames, base)  # the training loop's windows
    batches = (data.collate(rows_, frames, train.loss.mask_prompt)
               for rows_ in chosen.iter_batches(batch_size=train.batch_size, batch_format="numpy"))
    # disable=None: a bar on a terminal only (redrawn with carriage returns, bars run together in a log file)
    progress = tqdm(batches, total=-(-rows // train.batch_size), desc="evaluate", unit="batch", disable=None)
    metrics = evaluate(model.to(device), progress, setup, device).metrics()
    return {"checkpoint": str(checkpoint_dir) if checkpoint_dir else config.model.checkpoint,
            "dataset": str(dataset), "split": split, "conversations": rows, **metrics}


def write_report(result: dict, path: Path | None) -> str:
    text = json.dumps(result, indent=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return text
