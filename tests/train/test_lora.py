"""LoRA wrapping, one optimizer step, and the adapter files (plain functions: no Ray)."""

from __future__ import annotations

import json
import math

import peft
import pytest
import torch

from plexray.model import load_model
from plexray.train import lora
from plexray.train.config import LoraConfig, OptimConfig
from plexray.train.data import Batch
from plexray.train.errors import AdapterMismatchError, TrainingDivergedError
from plexray.train.loop import LossSetup, NonFiniteGuard, train_step
from plexray.train.loss import PRESETS
from plexray.train.optim import build_optimizer, lr_factor


def _batch(seed: int = 0) -> Batch:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 500, (2, 17, 16), generator=generator)
    loss_frames = torch.ones(2, 16, dtype=torch.bool)
    loss_frames[:, :4] = False
    return Batch(codes=codes, loss_frames=loss_frames, real_frames=32)


def _step(model, lm):
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-2, warmup_steps=0), total_steps=10)
    setup = LossSetup(PRESETS["personaplex"], list(lm.delays), lm.dep_q)
    return train_step(model, optimizer, scheduler, [_batch()], setup, torch.device("cpu"), grad_clip=1.0)


def test_only_lora_parameters_change(demo_checkpoint):
    lm = load_model(str(demo_checkpoint)).lm.train()
    model = lora.apply_lora(lm, LoraConfig(rank=4), seed=0)
    trainable, total = lora.trainable_parameters(model)
    assert 0 < trainable < total / 5
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = _step(model, lm)
    assert result.applied and math.isfinite(result.stats.metrics()["loss"])
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed, "the step changed nothing"
    assert all("lora_" in name for name in changed), sorted(n for n in changed if "lora_" not in n)[:3]
    # lora_B starts at zero and moves: the step did train the adapters
    assert any("lora_B" in name for name in changed)


def test_target_module_choices(demo_checkpoint):
    lm = load_model(str(demo_checkpoint)).lm
    names = set(lora.lora_config(lm, LoraConfig(target_modules="all-linear")).target_modules)
    assert "depformer_in.0" in names and "transformer.layers.0.gating.linear_in" in names
    assert "text_linear" not in names and "linears.0" not in names  # output heads stay as they are
    model = lora.apply_lora(lm, LoraConfig(train_embeddings=True), seed=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".text_emb." in n for n in trainable) and any(".lora_A." in n for n in trainable)
    assert not any("base_layer" in n for n in trainable)


def test_adapter_files_load_with_peft_and_mismatch_is_reported(demo_checkpoint, moshi_demo_checkpoint, tmp_path):
    lm = load_model(str(demo_checkpoint)).lm
    model = lora.apply_lora(lm, LoraConfig(rank=4), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)  # small, as after training: large values amplify float rounding
    lora.save_adapter(model, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    codes = _batch().codes
    with torch.no_grad():
        expected = model(codes).logits

    loaded = peft.PeftModel.from_pretrained(load_model(str(demo_checkpoint)).lm, str(tmp_path / "adapter"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(codes).logits, expected, equal_nan=True, rtol=1e-4, atol=1e-4)
    ours = lora.load_adapter(load_model(str(demo_checkpoint)).lm, tmp_path / "adapter")
    assert not any(p.requires_grad for p in ours.parameters())  # loaded for use, not for training

    # The moshi family has 8 depformer steps: adapters of steps 8-15 have nowhere to go.
    with pytest.raises(AdapterMismatchError, match="does not fit|does not match"):
        lora.load_adapter(load_model(str(moshi_demo_checkpoint)).lm, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text(json.dumps(config | {"target_modules": ["no_such_layer"]}))
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(
        (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(AdapterMismatchError, match="no_such_layer"):
        lora.load_adapter(load_model(str(demo_checkpoint)).lm, tmp_path / "bad")


def test_non_finite_loss_skips_the_step(demo_checkpoint):
    lm = load_model(str(demo_checkpoint)).lm.train()
    model = lora.apply_lora(lm, LoraConfig(rank=4), seed=0)
    with torch.no_grad():
        lm.text_linear.weight[0, 0] = float("nan")  # a poisoned base weight: every loss is NaN
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    result = _step(model, lm)
    assert not result.applied
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.parameters())


def test_a_batch_without_loss_tokens_changes_nothing(demo_checkpoint):
    lm = load_model(str(demo_checkpoint)).lm.train()
    model = lora.apply_lora(lm, LoraConfig(rank=4), seed=0)
    batch = _batch()
    batch.loss_frames[:] = False  # e.g. cropped inside the prompt phase
    optimizer, scheduler = build_optimizer(model, OptimConfig(lr=1e-2, warmup_steps=0), total_steps=10)
    setup = LossSetup(PRESETS["personaplex"], list(lm.delays), lm.dep_q)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    result = train_step(model, optimizer, scheduler, [batch], setup, torch.device("cpu"), grad_clip=1.0)
    assert result.empty and not result.applied
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters() if p.requires_grad)


def test_guard_stops_after_consecutive_non_finite_steps():
    guard = NonFiniteGuard(max_consecutive=2)
    guard.record(False, step=1)
    guard.record(True, step=2)  # a good step resets the run of bad ones
    guard.record(False, step=3)
    with pytest.raises(TrainingDivergedError, match="2 steps in a row.*3 skipped|2 steps in a row"):
        guard.record(False, step=4)
    assert guard.total == 3


def test_schedule_warms_up_then_decays():
    factors = [lr_factor(step, warmup_steps=2, total_steps=10, min_ratio=0.1) for step in range(12)]
    assert factors[0] == 0.5 and factors[1] == 1.0
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert factors[-1] == pytest.approx(0.1)


@pytest.mark.parametrize("train_embeddings", [False, True])
def test_adapter_selected_by_name_matches_peft(demo_checkpoint, train_embeddings):
    """Under FSDP peft cannot select the adapter from a gathered state dict; plexray's own selection
    (used with `full_state`) must give exactly peft's names and tensors."""
    from plexray.model import load_model
    from plexray.train.config import LoraConfig
    from plexray.train.lora import adapter_state, apply_lora

    model = apply_lora(load_model(str(demo_checkpoint)).lm, LoraConfig(rank=4, train_embeddings=train_embeddings), 0)
    by_peft = adapter_state(model)
    by_name = adapter_state(model, model.state_dict())
    assert by_peft and sorted(by_peft) == sorted(by_name)
    assert all(torch.equal(by_peft[k], by_name[k]) for k in by_peft)
