"""Training checkpoints: the adapter in peft's format (or the full LM in release layout), plus the
optimizer, scheduler and step state to resume from.

Only what is written is gathered, onto rank 0 alone, one parameter at a time: for LoRA the adapter
and its optimizer state (the frozen base never moves); for full fine-tuning the whole LM.

    <checkpoint>/adapter_config.json, adapter_model.safetensors   (LoRA; peft.PeftModel.from_pretrained loads them)
    <checkpoint>/model.safetensors                                 (full fine-tuning instead, release key layout)
    <checkpoint>/optimizer.pt                                      optimizer + scheduler state
    <checkpoint>/trainer_state.json                                step, metrics, base model, train config
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from plexray.model import layout, reference
from plexray.model.loader import read_safetensors
from plexray.train import distributed, lora
from plexray.train.errors import AdapterMismatchError, DamagedCheckpointError

OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"


def save_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, trainer_state: dict,
                    is_lora: bool) -> tempfile.TemporaryDirectory | None:
    """Gather what the checkpoint holds (collectives: every rank calls this) and write it on rank 0,
    into a new temporary directory (the caller removes it once reported); None on other ranks."""
    weights = distributed.parameters_on_rank0(model, trainable_only=is_lora)
    optimizer_state = distributed.optimizer_state_on_rank0(model, optimizer)
    if distributed.rank() != 0:
        return None
    staging = tempfile.TemporaryDirectory(prefix="plexray-ckpt-")
    directory = Path(staging.name)
    write_weights(directory, distributed.unwrap(model), weights, is_lora)
    write_training_state(directory, optimizer_state, scheduler.state_dict(), trainer_state)
    return staging


def write_weights(directory: Path, model: torch.nn.Module, state: dict[str, torch.Tensor], is_lora: bool) -> None:
    """`model` is the unwrapped (peft or plain) LM; `state` its whole state dict, or for LoRA at least
    its trainable parameters, with the inner module's names."""
    if is_lora:
        lora.save_adapter(model, directory, state)
    else:
        released = {k: v.contiguous() for k, v in layout.to_release_layout(state).items()}
        safetensors.torch.save_file(released, str(directory / reference.LM_FILE))


def write_training_state(directory: Path, optimizer_state: dict, scheduler_state: dict, state: dict) -> None:
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, directory / OPTIMIZER_FILE)
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_training_state(directory: Path) -> tuple[dict, dict]:
    """-> (trainer state, {"optimizer", "scheduler"}), once every file a resume reads is known to be whole:
    DamagedCheckpointError names the first that is missing or unreadable, and why. The weights are only
    checked here (their safetensors header against the file's size: a cut file fails), not loaded."""
    state = _read(directory, STATE_FILE, lambda path: parse_state(path.read_text()))
    optim = _read(directory, OPTIMIZER_FILE, lambda path: torch.load(path, map_location="cpu", weights_only=False))
    if state["lora"]:
        _read(directory, lora.ADAPTER_CONFIG, lambda path: json.loads(path.read_text()))
        _read(directory, lora.ADAPTER_WEIGHTS, _check_safetensors)
    else:
        _read(directory, reference.LM_FILE, _check_safetensors)
    return state, optim


def parse_state(text: str) -> dict:
    """A trainer_state.json's text -> the state, if it holds what a resume needs (ValueError if not)."""
    state = json.loads(text)
    if not isinstance(state.get("progress", {}).get("step"), int) or "lora" not in state:
        raise ValueError("no progress.step or lora in it")
    return state


def _read(directory: Path, name: str, read):
    path = directory / name
    if not path.is_file():
        raise DamagedCheckpointError(name, "missing")
    try:
        return read(path)
    except Exception as exc:  # whatever its reader raises on a cut or garbled file
        raise DamagedCheckpointError(name, unreadable(exc)) from exc


def unreadable(exc: Exception) -> str:
    """The reason a file could not be read, in one line."""
    lines = str(exc).strip().splitlines()
    return f"unreadable ({type(exc).__name__}: {lines[0] if lines else ''})"


def _check_safetensors(path: Path) -> None:
    with safetensors.safe_open(str(path), "pt"):
        pass


def is_adapter(directory: Path) -> bool:
    return (directory / lora.ADAPTER_CONFIG).is_file()


def is_standalone(directory: Path) -> bool:
    """A model of its own (released or merged: it has its Mimi file), not a training checkpoint that goes
    on a base model."""
    return (Path(directory) / reference.MIMI_FILE).is_file()


def merged_weights(lm: torch.nn.Module, directory: Path) -> torch.nn.Module:
    """The base `lm` with a training checkpoint's weights, a LoRA adapter folded in: a plain LM."""
    model = load_weights(lm, Path(directory))
    return model.merge_and_unload() if is_adapter(Path(directory)) else model


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
