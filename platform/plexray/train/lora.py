"""LoRA adapters on the LM with peft: which layers get them, what trains, and loading one back.

Base weights are frozen; peft's files (`adapter_config.json` + `adapter_model.safetensors`) are
the adapter format, so `peft.PeftModel.from_pretrained(lm, directory)` loads what plexray writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import peft
import safetensors.torch
import torch
from moshi.models.lm import LMModel

from plexray.model.loader import check_state, read_safetensors
from plexray.train.config import LoraConfig
from plexray.train.errors import AdapterMismatchError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_NAME = "default"  # peft's name for the one adapter plexray trains

# Attention projections (one Linear per depformer step in moshi 0.2) and the gating (feed-forward)
# linears, in the temporal transformer and the depformer.
ATTENTION_GATING = (r"(transformer|depformer)\.layers\.\d+\."
                    r"(self_attn\.(in_projs|out_projs)\.\d+|gating(\.\d+)?\.(linear_in|linear_out))")
# Output heads: peft's own `all-linear` leaves the output layer alone, and so does plexray's.
OUTPUT_HEADS = re.compile(r"^(text_linear|linears\.\d+)$")


def lora_config(lm: LMModel, config: LoraConfig) -> peft.LoraConfig:
    if config.target_modules == "attention-gating":
        targets: str | list[str] = ATTENTION_GATING  # a string is matched in full against module names
    else:
        targets = [name for name, module in lm.named_modules()
                   if isinstance(module, torch.nn.Linear) and not OUTPUT_HEADS.match(name)]
    # Embeddings train fully (peft keeps a trained copy of each and saves it with the adapter).
    embeddings = [name for name, module in lm.named_modules() if isinstance(module, torch.nn.Embedding)]
    return peft.LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, bias="none",
        target_modules=targets, modules_to_save=embeddings if config.train_embeddings else None,
    )


def apply_lora(lm: LMModel, config: LoraConfig, seed: int) -> peft.PeftModel:
    """Wrap `lm` (in place) with fresh adapters; the same seed gives the same adapters on every worker."""
    torch.manual_seed(seed)
    return peft.get_peft_model(lm, lora_config(lm, config))


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def adapter_state(model: peft.PeftModel, full_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The adapter's tensors with peft's file names (from `full_state`, e.g. gathered by FSDP, if given).

    peft finds its layers by module name, and under FSDP those names gain `_fsdp_wrapped_module.`
    while the gathered state dict keeps clean names, so peft would select nothing from `full_state`:
    select by name here instead, renamed exactly as peft renames (the adapter name dropped).
    """
    if full_state is None:
        return peft.get_peft_model_state_dict(model)
    adapter = f".{ADAPTER_NAME}"
    selected = {}
    for name, tensor in full_state.items():
        if "lora_" in name and adapter in name:
            selected[name.replace(adapter, "")] = tensor
        elif f"modules_to_save{adapter}." in name:
            selected[name.replace(f"modules_to_save{adapter}.", "")] = tensor
    return selected


def save_adapter(model: peft.PeftModel, directory: Path, full_state: dict[str, torch.Tensor] | None = None) -> None:
    """peft's adapter files: `adapter_config.json` and `adapter_model.safetensors`."""
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config[ADAPTER_NAME].save_pretrained(str(directory))
    state = {name: tensor.detach().contiguous() for name, tensor in adapter_state(model, full_state).items()}
    safetensors.torch.save_file(state, str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def load_adapter(lm: LMModel, directory: Path, trainable: bool = False) -> peft.PeftModel:
    """Put the adapter saved in `directory` onto `lm` (in place), after checking that it fits.
    `trainable`: its weights train on (resume); otherwise frozen, for evaluation or merging.

    peft itself only warns about missing adapter keys; here every name and shape must match.
    """
    directory = Path(directory)
    config_path = directory / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterMismatchError(f"{directory}: no {ADAPTER_CONFIG} (not a LoRA adapter directory)")
    try:
        config = peft.LoraConfig.from_pretrained(str(directory))
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise AdapterMismatchError(f"{config_path}: not a LoRA adapter config ({exc})") from None
    config.inference_mode = not trainable
    state = read_safetensors(directory / ADAPTER_WEIGHTS)
    try:
        model = peft.get_peft_model(lm, config)
    except ValueError as exc:  # e.g. "Target modules {...} not found in the base model"
        raise AdapterMismatchError(f"{directory}: adapter does not fit the base model: {exc}") from None
    expected = {name: tuple(t.shape) for name, t in adapter_state(model).items()}
    try:
        check_state(directory / ADAPTER_WEIGHTS, state, expected, "base model's adapter")
    except Exception as exc:
        raise AdapterMismatchError(str(exc)) from None
    peft.set_peft_model_state_dict(model, state)
    return model


def is_depformer_parameter(name: str) -> bool:
    """Parameters of the depformer side (its transformer, input projections, embeddings, output heads)."""
    return "depformer" in name or re.search(r"(^|\.)linears\.\d+\.", name) is not None
