"""Reading one LoRA adapter (peft's files, as `plexray train` writes them) for the batched engine.

An adapter is read into host memory and checked against the engine's wrapped linears before any of
it goes near the device: every tensor must name a linear the engine wraps, with that linear's shape,
and the adapter must be a plain LoRA (what a per-slot low-rank update can apply). Anything else is
refused with an AdapterFileError naming the file and the problem; nothing of it is ever applied.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from plexray.errors import PlexrayError
from plexray.model.loader import read_safetensors
from plexray.serve.engine.batched_lora import LowRank

# peft's file names, as plexray.train.lora writes them (not imported from there: that module pulls
# peft and transformers, about 5 s of imports, into every serving replica).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's names: base_model.model.<module>.lora_A.weight


class AdapterFileError(PlexrayError):
    """An adapter that cannot be served: missing, unreadable, unsupported or made for another base."""


@dataclasses.dataclass
class HostAdapter:
    """One adapter in host memory, ready to be written into a device row."""

    name: str
    rank: int
    updates: dict[str, LowRank]  # wrapped linear name -> its low-rank update (scaling folded into b)

    @property
    def nbytes(self) -> int:
        return sum(u.a.nbytes + u.b.nbytes for u in self.updates.values())


def read_adapter(name: str, directory: Path, shapes: dict[str, tuple[int, int]], max_rank: int,
                 dtype: torch.dtype) -> HostAdapter:
    """Read and check the adapter in `directory` against the wrapped linears' (out, in) `shapes`."""
    directory = Path(directory)
    config = _read_config(directory)
    rank, alpha = config["r"], config["lora_alpha"]
    if rank > max_rank:
        raise AdapterFileError(f"{directory}: rank {rank} exceeds this engine's max_rank {max_rank}")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank  # as peft scales
    try:
        state = read_safetensors(directory / ADAPTER_WEIGHTS)
    except PlexrayError as exc:  # missing, truncated, garbled
        raise AdapterFileError(str(exc)) from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, kind = _split_key(directory, key)
        pairs.setdefault(module, {})[kind] = tensor
    updates = {}
    for module, pair in sorted(pairs.items()):
        if module not in shapes:
            raise AdapterFileError(f"{directory}: adapts {module}, which is not a linear this engine serves adapters "
                                   f"on (another base model, or targets beyond the engine's adapter targets)")
        if set(pair) != {"lora_A", "lora_B"}:
            raise AdapterFileError(f"{directory}: {module} has {sorted(pair)}, expected lora_A and lora_B")
        out_features, in_features = shapes[module]
        a, b = pair["lora_A"], pair["lora_B"]
        if tuple(a.shape) != (rank, in_features) or tuple(b.shape) != (out_features, rank):
            raise AdapterFileError(
                f"{directory}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}; the base model "
                f"needs [{rank}, {in_features}] and [{out_features}, {rank}] (trained on another base model?)")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise AdapterFileError(f"{directory}: {module} holds NaN or infinite weights")
        updates[module] = LowRank(a.to(dtype).contiguous(), (b.float() * scaling).to(dtype).contiguous())
    if not updates:
        raise AdapterFileError(f"{directory}: {ADAPTER_WEIGHTS} holds no LoRA weights")
    return HostAdapter(name, rank, updates)


def _read_config(directory: Path) -> dict:
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterFileError(f"{directory}: no {ADAPTER_CONFIG} (not a LoRA adapter directory)")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterFileError(f"{path}: unreadable ({exc})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterFileError(f"{path}: not a LoRA adapter config (peft_type {config.get('peft_type')!r})"
                               if isinstance(config, dict) else f"{path}: not a JSON object")
    rank, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise AdapterFileError(f"{path}: needs a positive integer r and a finite lora_alpha (has {rank!r}, {alpha!r})")
    # What a per-slot low-rank update cannot apply: served only merged (`plexray merge`).
    unsupported = [what for what, present in (
        ("modules_to_save (fully trained embeddings: train.lora.train_embeddings)", config.get("modules_to_save")),
        ("use_dora", config.get("use_dora")),
        (f"bias={config.get('bias')!r}", config.get("bias", "none") != "none"),
        ("lora_bias", config.get("lora_bias")),
        ("rank_pattern", config.get("rank_pattern")),
        ("alpha_pattern", config.get("alpha_pattern")),
    ) if present]
    if unsupported:
        raise AdapterFileError(f"{path}: {', '.join(unsupported)} cannot be served as a per-session adapter; "
                               f"merge it into its base with `plexray merge` and serve that instead")
    return config


def _split_key(directory: Path, key: str) -> tuple[str, str]:
    """'base_model.model.<module>.lora_A.weight' -> (<module>, 'lora_A')."""
    for kind in ("lora_A", "lora_B"):
        suffix = f".{kind}.weight"
        if key.startswith(PEFT_PREFIX) and key.endswith(suffix):
            return key[len(PEFT_PREFIX):-len(suffix)], kind
    raise AdapterFileError(f"{directory / ADAPTER_WEIGHTS}: unexpected tensor {key!r} (not a LoRA weight)")
