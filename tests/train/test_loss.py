"""The loss against a computation written out token by token, prompt masking, presets."""

from __future__ import annotations

import math

import pytest
import torch

from plexray.model import load_model
from plexray.model.architectures import DELAYS
from plexray.train.loss import PRESETS, LossWeights, compute_loss, token_weights
from plexray.train.config import LossConfig
from plexray.train.loss import weights_from_config

DEP_Q = 16


def _codes(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2048, (batch, 17, frames), generator=generator)
    codes[:, 0] = torch.randint(0, 512, (batch, frames), generator=generator)
    codes[:, 0, ::3] = 3  # text padding
    codes[:, 0, 1::7] = 0  # end of padding
    codes[1, :, frames - 4:] = -1  # the second conversation is shorter: padded
    return codes


def _expected_loss(lm, codes: torch.Tensor, loss_frames: torch.Tensor, w: LossWeights) -> float:
    """Token by token: CE of each valid target, weighted, each part divided by its weight sum."""
    out = lm(codes)
    batch, _, frames = codes.shape
    text_num = text_den = audio_num = audio_den = 0.0
    for b in range(batch):
        for t in range(frames):
            if not loss_frames[b, t]:
                continue
            target = int(codes[b, 0, t])
            if target >= 0 and t < frames - DELAYS[0]:
                weight = w.text_padding if target in (0, 3) else w.text
                nll = -torch.log_softmax(out.text_logits[b, 0, t].double(), -1)[target].item()
                text_num += weight * nll
                text_den += weight
            for k in range(DEP_Q):
                target = int(codes[b, 1 + k, t])
                if target < 0 or t >= frames - DELAYS[1 + k]:
                    continue
                weight = {0: w.semantic, 8: w.user_semantic}.get(k, w.acoustic)
                if k >= 8:
                    weight *= w.user_audio
                nll = -torch.log_softmax(out.logits[b, k, t].double(), -1)[target].item()
                audio_num += weight * nll
                audio_den += weight
    return text_num / text_den + audio_num / audio_den


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_loss_matches_token_by_token_computation(demo_bundle, preset):
    lm = demo_bundle.lm
    codes = _codes(2, 12)
    loss_frames = torch.ones(2, 12, dtype=torch.bool)
    loss_frames[:, :3] = False  # a prompt phase
    weights = PRESETS[preset]
    with torch.no_grad():
        text_w, audio_w = token_weights(codes, loss_frames, weights, lm.delays, lm.dep_q)
        result = compute_loss(lm(codes), codes, text_w, audio_w)
        expected = _expected_loss(lm, codes, loss_frames, weights)
    assert result.total.item() == pytest.approx(expected, rel=1e-5)
    assert result.stats.metrics()["loss"] == pytest.approx(expected, rel=1e-5)


def test_components_and_accuracies(demo_bundle):
    lm = demo_bundle.lm
    codes = _codes(2, 10, seed=1)
    loss_frames = torch.ones(2, 10, dtype=torch.bool)
    with torch.no_grad():
        out = lm(codes)
        text_w, audio_w = token_weights(codes, loss_frames, PRESETS["personaplex"], lm.delays, lm.dep_q)
        metrics = compute_loss(out, codes, text_w, audio_w).stats.metrics()
        valid = out.mask[:, 0]
        semantic_nll = torch.nn.functional.cross_entropy(out.logits[:, 0][valid], codes[:, 1][valid])
        hits = (out.logits[:, 0][valid].argmax(-1) == codes[:, 1][valid]).float().mean()
        text = codes[:, 0]
        non_padding = out.text_mask[:, 0] & (text != 0) & (text != 3)
        text_hits = (out.text_logits[:, 0][non_padding].argmax(-1) == text[non_padding]).float().mean()
    assert metrics["semantic_loss"] == pytest.approx(semantic_nll.item(), rel=1e-5)
    assert metrics["semantic_accuracy"] == pytest.approx(hits.item())
    assert metrics["text_accuracy"] == pytest.approx(text_hits.item())
    assert math.isfinite(metrics["acoustic_loss"]) and 0 <= metrics["acoustic_accuracy"] <= 1


def test_masked_prompt_frames_get_zero_gradient(demo_bundle):
    lm = demo_bundle.lm
    codes = _codes(2, 12, seed=2)
    loss_frames = torch.ones(2, 12, dtype=torch.bool)
    loss_frames[:, 2:6] = False
    out = lm(codes)
    out.logits.retain_grad()
    out.text_logits.retain_grad()
    text_w, audio_w = token_weights(codes, loss_frames, PRESETS["moshi-finetune"], lm.delays, lm.dep_q)
    compute_loss(out, codes, text_w, audio_w).total.backward()
    assert torch.all(out.logits.grad[:, :, 2:6] == 0)
    assert torch.all(out.text_logits.grad[:, :, 2:6] == 0)
    assert out.logits.grad[:, :, 6:8].abs().sum() > 0  # frames outside the prompt do learn
    assert out.text_logits.grad[:, :, 6:8].abs().sum() > 0
    lm.zero_grad(set_to_none=True)


def test_config_overrides_a_preset():
    weights = weights_from_config(LossConfig(preset="moshi-finetune", acoustic_weight=0.5))
    assert weights == LossWeights(text=1.0, text_padding=0.5, semantic=100.0, acoustic=0.5, user_semantic=1.0,
                                  user_audio=1.0)


@pytest.mark.parametrize("family", ["personaplex", "moshi"])
def test_moshi_finetune_preset_is_moshi_finetunes_rule(demo_bundle, moshi_demo_checkpoint, family):
    """moshi-finetune's compute_loss_with_mask, written out as it weighs: every valid target 1, the text
    padding ids 0.5, the first predicted codebook (and only it) x100, each part a weighted mean."""
    lm = demo_bundle.lm if family == "personaplex" else load_model(str(moshi_demo_checkpoint)).lm
    codes = _codes(2, 12, seed=4)
    loss_frames = torch.ones(2, 12, dtype=torch.bool)
    loss_frames[:, :3] = False
    with torch.no_grad():
        out = lm(codes)
        text_target, audio_target = codes[:, 0], codes[:, 1:1 + lm.dep_q]
        text_mask = out.text_mask[:, 0] & loss_frames & (text_target >= 0)
        text_weight = text_mask.float()
        text_weight[(text_target == 3) | (text_target == 0)] *= 0.5
        audio_mask = out.mask & loss_frames[:, None] & (audio_target >= 0)
        audio_weight = audio_mask.float()
        audio_weight[:, 0] *= 100.0

        def weighted_mean(logits, target, mask, weight):
            nll = torch.nn.functional.cross_entropy(logits[mask].double(), target[mask], reduction="none")
            return (nll * weight[mask]).sum() / weight[mask].sum()

        expected = (weighted_mean(out.text_logits[:, 0], text_target, text_mask, text_weight)
                    + weighted_mean(out.logits, audio_target, audio_mask, audio_weight))
        text_w, audio_w = token_weights(codes, loss_frames, PRESETS["moshi-finetune"], lm.delays, lm.dep_q)
        result = compute_loss(out, codes, text_w, audio_w)
    assert result.total.item() == pytest.approx(expected.item(), rel=1e-6)
