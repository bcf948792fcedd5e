"""The released repos' layout: their file names, and their tensor names (moshi 0.1's) vs moshi 0.2's.

moshi 0.2 splits each attention projection into one Linear per depformer step
(`self_attn.in_projs.{i}.weight`); the released checkpoints store them stacked on dim 0
(`self_attn.in_proj_weight`, `self_attn.out_proj.weight`). moshi's load hook reads the released
layout; plexray writes it, so its checkpoints have the real repos' key names.
"""

from __future__ import annotations

import re

import torch

# File names of nvidia/personaplex-7b-v1 and kyutai/moshiko-pytorch-bf16.
LM_FILE = "model.safetensors"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_FILE = "tokenizer_spm_32k_3.model"
CONFIG_FILE = "config.json"
# plexray's own metadata (family, Mimi config, prompt codes, provenance), beside config.json: moshi's
# loaders pass every key of config.json to LMModel, so an extra key there breaks them.
METADATA_FILE = "plexray.json"
VOICES_FILE = "voices.tgz"
VOICES_DIR = "voices"

_SPLIT_PROJ = re.compile(r"^(?P<prefix>.*\.self_attn\.)(?P<kind>in_projs|out_projs)\.(?P<index>\d+)\.weight$")
_RELEASE_NAME = {"in_projs": "in_proj_weight", "out_projs": "out_proj.weight"}


def to_release_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack per-step projections into the released key names; other tensors pass through.

    Works on meta tensors too, which is how expected shapes of a 7B model are computed without memory.
    """
    released: dict[str, torch.Tensor] = {}
    groups: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in state.items():
        match = _SPLIT_PROJ.match(name)
        if match is None:
            released[name] = tensor
            continue
        release_name = match["prefix"] + _RELEASE_NAME[match["kind"]]
        groups.setdefault(release_name, {})[int(match["index"])] = tensor
    for release_name, parts in groups.items():
        released[release_name] = torch.cat([parts[i] for i in range(len(parts))], dim=0)
    return released


def expected_release_shapes(lm: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape that a released checkpoint for `lm`'s architecture must contain."""
    return {name: tuple(t.shape) for name, t in to_release_layout(lm.state_dict()).items()}


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a module's own state dict (Mimi checkpoints use moshi 0.2 names as is)."""
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}
