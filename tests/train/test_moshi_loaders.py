"""Checkpoints written by plexray (the demo's and `plexray merge`'s, both families) load with moshi's
own loaders, unchanged, and moshi's generator runs a merged Moshi-family one.

moshi's CheckpointInfo hands every key of config.json it does not know to LMModel, so plexray's
metadata lives beside it, in plexray.json. The files are given as local paths, as moshi's own
server takes them (`--config`, `--moshi-weight`, `--tokenizer`): no hub access is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from moshi.models.lm import LMGen
from moshi.models.loaders import CheckpointInfo

from plexray.model import layout, load_model
from plexray.model.config import ModelConfig
from plexray.train import lora
from plexray.train.config import LoraConfig
from plexray.train.merge import max_output_difference, merge_checkpoint


def moshi_checkpoint_info(directory: Path) -> CheckpointInfo:
    return CheckpointInfo.from_hf_repo(
        "local/unused",  # every file below is a local path, so the repo name is never looked up
        moshi_weights=directory / layout.LM_FILE, mimi_weights=directory / layout.MIMI_FILE,
        tokenizer=directory / layout.TOKENIZER_FILE, config_path=directory / layout.CONFIG_FILE)


def merged_checkpoint(base: Path, output: Path) -> Path:
    """`plexray merge` of an adapter whose weights are not zero (so merging changes the model)."""
    model = lora.apply_lora(load_model(str(base)).lm, LoraConfig(rank=4), seed=0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)
    lora.save_adapter(model, output / "adapter")
    return merge_checkpoint(ModelConfig(checkpoint=str(base)), output / "adapter", output / "merged")


@pytest.fixture(scope="module", params=["personaplex", "moshi"])
def family_checkpoints(request, demo_checkpoint, moshi_demo_checkpoint, tmp_path_factory):
    base = demo_checkpoint if request.param == "personaplex" else moshi_demo_checkpoint
    return request.param, {"base": base, "merged": merged_checkpoint(base, tmp_path_factory.mktemp("merge"))}


@pytest.mark.parametrize("which", ["base", "merged"])
def test_moshi_checkpoint_info_loads_what_plexray_wrote(family_checkpoints, which):
    family, checkpoints = family_checkpoints
    directory = checkpoints[which]
    assert "plexray" not in json.loads((directory / layout.CONFIG_FILE).read_text())
    info = moshi_checkpoint_info(directory)
    moshi_lm = info.get_moshi(device="cpu", dtype=torch.float32)
    plexray_lm = load_model(str(directory)).lm
    assert moshi_lm.dep_q == plexray_lm.dep_q == (16 if family == "personaplex" else 8)
    codes = torch.randint(0, 500, (1, 17, 12), generator=torch.Generator().manual_seed(0))
    assert max_output_difference(moshi_lm, plexray_lm, codes) == 0.0
    assert info.get_text_tokenizer().vocab_size() == moshi_lm.text_card


def test_moshi_generator_runs_a_merged_moshi_family_checkpoint(moshi_demo_checkpoint, tmp_path):
    lm = moshi_checkpoint_info(merged_checkpoint(moshi_demo_checkpoint, tmp_path)).get_moshi(
        device="cpu", dtype=torch.float32)
    generator = LMGen(lm, temp=0.8, temp_text=0.7)
    user_codes = torch.randint(0, lm.card, (1, lm.num_codebooks - lm.dep_q - 1, 1),
                               generator=torch.Generator().manual_seed(1))
    frames = []
    with generator.streaming(1):
        for _ in range(6):
            tokens = generator.step(user_codes)
            if tokens is not None:
                frames.append(tokens)
    # The first frames only fill the delay buffer; then one text token and dep_q audio codes a frame.
    assert frames and all(t.shape == (1, 1 + lm.dep_q, 1) for t in frames)
    assert all(0 <= int(t[0, 0, 0]) < lm.text_card for t in frames)
