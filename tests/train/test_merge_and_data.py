"""Merging an adapter into a standalone checkpoint; bad training sets fail before training."""

from __future__ import annotations

import json

import pytest
import torch

from plexray.model import load_model
from plexray.model.config import ModelConfig
from plexray.train import lora
from plexray.train.config import LoraConfig
from plexray.train.data import collate, open_splits, split_key, validation_cutoff, windows
from plexray.train.errors import TrainingDataError
from plexray.train.merge import max_output_difference, merge_checkpoint
from shards import conversation_row, write_shards


def test_merged_checkpoint_loads_and_equals_the_adapter(demo_checkpoint, tmp_path):
    model = lora.apply_lora(load_model(str(demo_checkpoint)).lm, LoraConfig(rank=4, train_embeddings=True), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
            elif p.requires_grad:  # the trained embedding copies
                p.add_(0.01 * torch.randn_like(p))
    lora.save_adapter(model, tmp_path / "adapter")

    merged_dir = merge_checkpoint(ModelConfig(checkpoint=str(demo_checkpoint)), tmp_path / "adapter",
                                  tmp_path / "merged")
    metadata = json.loads((merged_dir / "plexray.json").read_text())
    assert metadata["lora"] is False and metadata["family"] == "personaplex"
    assert "plexray" not in json.loads((merged_dir / "config.json").read_text())  # moshi's loaders read it
    merged = load_model(str(merged_dir))  # the serving loader, which refuses configs that declare LoRA
    assert sorted(merged.voices) == sorted(load_model(str(demo_checkpoint)).voices)

    with_adapter = lora.load_adapter(load_model(str(demo_checkpoint)).lm, tmp_path / "adapter")
    codes = torch.randint(0, 500, (2, 17, 20), generator=torch.Generator().manual_seed(3))
    assert max_output_difference(merged.lm, with_adapter, codes) < 1e-3
    assert max_output_difference(merged.lm, load_model(str(demo_checkpoint)).lm, codes) > 1e-2  # it did change

    with pytest.raises(Exception, match="not empty"):
        merge_checkpoint(ModelConfig(checkpoint=str(demo_checkpoint)), tmp_path / "adapter", merged_dir)


def test_bad_training_sets_fail_with_the_reason(ray_cluster, demo_bundle, tmp_path):
    rows = [conversation_row(demo_bundle, i, frames=10) for i in range(4)]
    write_shards(tmp_path / "no-codes", rows, drop=("codes",))
    with pytest.raises(TrainingDataError, match=r"lack column\(s\) \['codes'\]"):
        open_splits(tmp_path / "no-codes", 0.25)

    moshi_rows = [conversation_row(demo_bundle, i, frames=10, streams=9) for i in range(4)]
    write_shards(tmp_path / "nine-streams", moshi_rows)
    with pytest.raises(TrainingDataError, match=r"shape \[9, \d+\]; expected \[17, T\]"):
        open_splits(tmp_path / "nine-streams", 0.25)

    with pytest.raises(TrainingDataError, match="no training shards"):
        open_splits(tmp_path / "missing", 0.25)

    write_shards(tmp_path / "tiny", rows[:1])
    with pytest.raises(TrainingDataError, match="fewer than the 2 needed"):
        open_splits(tmp_path / "tiny", 0.0, min_rows=2)
    with pytest.raises(TrainingDataError, match="the training split has 0 conversations"):
        open_splits(tmp_path / "tiny", 0.5)  # its one conversation is held out for validation

    write_shards(tmp_path / "four", rows)
    train, validation = open_splits(tmp_path / "four", 0.25, min_rows=1)
    assert (train.count(), validation.count()) == (3, 1)
    with pytest.raises(TrainingDataError, match="the validation split has 1 conversations, fewer than the 2"):
        open_splits(tmp_path / "four", 0.25, min_rows=2)


def test_validation_split_has_the_exact_size_and_ignores_order():
    ids = [f"conv-{i:03d}" for i in range(20)]
    for fraction, held_out in ((0.0, 0), (0.01, 1), (0.2, 4), (0.5, 10)):
        cutoff = validation_cutoff(ids, fraction)
        validation = sorted(i for i in ids if cutoff is not None and split_key(i) <= cutoff)
        assert len(validation) == held_out
        assert validation_cutoff(list(reversed(ids)), fraction) == cutoff
    # Held-out conversations are the ones with the smallest hashes, not the first ones listed.
    assert sorted(i for i in ids if split_key(i) <= validation_cutoff(ids, 0.2)) != ids[:4]


def test_collate_pads_windows_and_masks_the_prompt(demo_bundle):
    rows = [conversation_row(demo_bundle, i, frames=frames) for i, frames in enumerate((5, 40))]
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    prompt_end = rows[0]["prompt_end"]
    batch = collate(columns, max_frames=prompt_end + 10, mask_prompt=True)
    long_windows = windows(rows[1]["codes"], 0, prompt_end, prompt_end + 10, mask_prompt=True)
    assert batch.codes.shape == (1 + len(long_windows), 17, prompt_end + 10)  # the long one: windows
    assert torch.all(batch.codes[0, :, prompt_end + 5:] == -1)  # the short one is padded
    assert torch.all(batch.codes[1:] >= 0)
    assert torch.equal(batch.codes[1], torch.from_numpy(rows[1]["codes"][:, :prompt_end + 10]).long())
    assert not batch.loss_frames[:, :prompt_end].any() and batch.loss_frames[1, prompt_end:].all()
    assert batch.real_frames == (prompt_end + 5) + (prompt_end + 10) * len(long_windows)
