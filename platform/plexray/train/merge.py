"""`plexray merge`: fold a LoRA adapter into the base LM and write a standalone checkpoint.

The output has the real repos' file layout (LM in release key layout, Mimi, tokenizer, voices),
a config.json that moshi's own loaders read, plexray's metadata beside it (plexray.json), and both
declare no LoRA: loading a merged model with LoRA layers declared would
add freshly initialised adapters and silently change its outputs. `plexray.model.load_model`
(the serving loader) loads it like any other checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import safetensors.torch
import torch

from plexray.errors import PlexrayError
from plexray.model import layout, reference
from plexray.model.config import ModelConfig
from plexray.model.loader import LEGACY_METADATA_KEY
from plexray.train import checkpoint

# The keys of config.json that moshi's CheckpointInfo takes for itself (file names, generation settings);
# not `lora_name`: a merged checkpoint has no LoRA.
MOSHI_CONFIG_KEYS = ("moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "model_type", "lm_gen_config",
                     "tts_config", "stt_config", "model_id")

def merge_checkpoint(model_config: ModelConfig, training_checkpoint: Path, output_dir: Path) -> Path:
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise PlexrayError(f"{output_dir}: not empty; choose a new directory for the merged checkpoint")
    bundle = model_config.load()
    merged = checkpoint.merged_weights(bundle.lm, Path(training_checkpoint))

    output_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous() for name, tensor in
             layout.to_release_layout(merged.state_dict()).items()}
    safetensors.torch.save_file(state, str(output_dir / reference.LM_FILE))
    for source, name in ((bundle.files.mimi, reference.MIMI_FILE), (bundle.files.tokenizer, reference.TOKENIZER_FILE)):
        shutil.copyfile(source, output_dir / name)
    voices = bundle.files.voices
    if voices is not None:
        target = output_dir / (reference.VOICES_FILE if voices.is_file() else reference.VOICES_DIR)
        (shutil.copyfile if voices.is_file() else shutil.copytree)(voices, target)
    config, metadata = _merged_config(bundle, training_checkpoint)
    (output_dir / layout.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    (output_dir / reference.CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return output_dir


def _merged_config(bundle, training_checkpoint: Path) -> tuple[dict, dict]:
    """-> (config.json: the base's, declaring no LoRA, with the architecture written out; plexray.json:
    the base's metadata, declaring no LoRA and where the merged model came from)."""
    base = json.loads(bundle.files.config.read_text()) if bundle.files.config is not None else {}
    base_metadata = base.pop(LEGACY_METADATA_KEY, {})  # a base written before plexray.json
    if bundle.files.metadata is not None:
        base_metadata = json.loads(bundle.files.metadata.read_text())
    metadata = dict(base_metadata, family=bundle.family, lora=False,
                    merged_from={"base": bundle.files.source, "checkpoint": str(training_checkpoint)})
    # moshi's CheckpointInfo passes every other key to LMModel: keep only those it reads itself, and
    # write the architecture out (the real PersonaPlex config.json has none).
    config = {k: v for k, v in base.items() if k in MOSHI_CONFIG_KEYS} | bundle.lm_kwargs
    config.setdefault("model_type", "moshi")
    return config, metadata


@torch.no_grad()
def max_output_difference(a: torch.nn.Module, b: torch.nn.Module, codes: torch.Tensor) -> float:
    """Largest absolute difference of the text and audio logits of two LMs on the same codes [B, 17, T]."""
    out_a, out_b = a(codes), b(codes)
    diffs = [(x.nan_to_num() - y.nan_to_num()).abs().max().item()
             for x, y in ((out_a.logits, out_b.logits), (out_a.text_logits, out_b.text_logits))]
    return max(diffs)
