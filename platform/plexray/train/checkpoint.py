"""Training checkpoints: the adapter in peft's format (or the full LM in release layout), plus the
optimizer, scheduler and step state to resume from.

    <checkpoint>/adapter_config.json, adapter_model.safetensors   (LoRA; peft.PeftModel.from_pretrained loads them)
    <checkpoint>/model.safetensors                                 (full fine-tuning instead, release key layout)
    <checkpoint>/optimizer.pt                                      optimizer + scheduler state
    <checkpoint>/trainer_state.json                                step, metrics, base model, train config
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch
import torch

from plexray.model import layout, reference
from plexray.model.loader import read_safetensors
from plexray.train import lora
from plexray.train.errors import AdapterMismatchError

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"


def write_weights(directory: Path, model: torch.nn.Module, full_state: dict[str, torch.Tensor], is_lora: bool) -> None:
    """`model` is the unwrapped (peft or plain) LM; `full_state` its unsharded state dict."""
    if is_lora:
        lora.save_adapter(model, directory, full_state)
    else:
        released = {k: v.contiguous() for k, v in layout.to_release_layout(full_state).items()}
        safetensors.torch.save_file(released, str(directory / reference.LM_FILE))


def write_training_state(directory: Path, optimizer_state: dict, scheduler_state: dict, state: dict) -> None:
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_training_state(directory: Path) -> tuple[dict, dict]:
    """-> (trainer state, {"optimizer", "scheduler"})."""
    state = json.loads((directory / STATE_FILE).read_text())
    optim = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=False)
    return state, optim


def is_adapter(directory: Path) -> bool:
    return (directory / lora.ADAPTER_CONFIG).is_file()


def load_weights(lm: torch.nn.Module, directory: Path, trainable: bool = False) -> torch.nn.Module:
    """Put a checkpoint's weights on the base `lm`: its adapter (-> PeftModel) or its full LM weights."""
    directory = Path(directory)
    if is_adapter(directory):
        return lora.load_adapter(lm, directory, trainable=trainable)
    weights = directory / reference.LM_FILE
    if not weights.is_file():
        raise AdapterMismatchError(f"{directory}: neither a LoRA adapter ({lora.ADAPTER_CONFIG}) nor LM weights "
                                   f"({reference.LM_FILE})")
    state = read_safetensors(weights)
    try:
        lm.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AdapterMismatchError(f"{weights}: does not fit the base model: {exc}") from None
    return lm
