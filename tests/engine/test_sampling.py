"""Sampling settings mean what they mean in Kyutai's moshi server (whose protocol NVIDIA's client speaks)."""

from __future__ import annotations

import math

import torch

from plexray.serve.engine.config import (AUDIO_CODEBOOK_SIZE, MAX_PAD_MULT, MAX_REPETITION_PENALTY, MAX_TEMPERATURE,
                                         TEXT_VOCABULARY)
from plexray.serve.engine.sampling import SamplingParams, apply_text_biases, gumbel_noise, sample

PAD = 3


def biased(logits, pad_mult, temperature, penalty=1.0, recent=None):
    batch = logits.shape[0]
    recent = torch.full((batch, 4), -1) if recent is None else recent
    return apply_text_biases(logits, recent, torch.full((batch,), penalty), torch.full((batch,), pad_mult),
                             torch.full((batch,), temperature), PAD)


def test_pad_mult_multiplies_the_padding_probability_by_its_exponential():
    # Kyutai (rust/moshi-core lm_generate_multistream.rs): prs[pad] *= exp(pad_mult) after the
    # tempered softmax. Relative to any other token, the padding odds move by exactly exp(pad_mult).
    logits = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    for temperature in (0.2, 0.7, 1.2):
        before = torch.log_softmax(logits / temperature, dim=-1)
        for pad_mult in (-4.0, 0.0, 1.5, 4.0):
            after = torch.log_softmax(biased(logits, pad_mult, temperature) / temperature, dim=-1)
            odds_change = (after[0, PAD] - after[0, 7]) - (before[0, PAD] - before[0, 7])
            assert math.isclose(odds_change.item(), pad_mult, abs_tol=1e-4)
    assert torch.equal(biased(logits, 0.0, 0.7), logits)  # the client's default changes nothing


def test_top_k_is_taken_after_the_padding_bias():
    logits = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.5, 0.0]])  # padding (3) is second best
    params = SamplingParams(torch.tensor([1.0]), torch.tensor([1]), torch.tensor([5]))

    def token(pad_mult: float) -> int:
        return sample(biased(logits, pad_mult, 1.0), params, torch.tensor([0]), 0, k_max=1).item()

    assert token(0.0) == 4
    assert token(1.0) == PAD  # exp(1) lifts padding above the best word: it enters the top-1
    assert token(-4.0) == 4


def test_seeds_far_apart_draw_different_numbers():
    ids = torch.arange(8)[None]
    position = torch.tensor([10])
    draws = [gumbel_noise(torch.tensor([seed]), position, 0, ids) for seed in (0, 2**26, 2**30)]
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_the_largest_settings_keep_the_arithmetic_finite():
    logits = torch.randn(2, TEXT_VOCABULARY, generator=torch.Generator().manual_seed(1)) * 30
    recent = torch.arange(8).repeat(2, 1)
    for pad_mult in (-MAX_PAD_MULT, MAX_PAD_MULT):
        out = biased(logits, pad_mult, MAX_TEMPERATURE, penalty=MAX_REPETITION_PENALTY, recent=recent)
        assert torch.isfinite(out).all()
        params = SamplingParams(torch.full((2,), MAX_TEMPERATURE), torch.full((2,), TEXT_VOCABULARY),
                                torch.tensor([0, 2**31 - 1]))
        tokens = sample(out, params, torch.tensor([5, 5]), 0, k_max=TEXT_VOCABULARY)
        assert ((0 <= tokens) & (tokens < TEXT_VOCABULARY)).all()
    audio = torch.randn(2, AUDIO_CODEBOOK_SIZE)
    params = SamplingParams(torch.full((2,), MAX_TEMPERATURE), torch.full((2,), AUDIO_CODEBOOK_SIZE),
                            torch.tensor([0, 1]))
    assert (sample(audio, params, torch.tensor([0, 0]), 1, k_max=AUDIO_CODEBOOK_SIZE) < AUDIO_CODEBOOK_SIZE).all()
