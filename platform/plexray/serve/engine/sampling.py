"""Batched token sampling whose randomness belongs to each session, not to the batch.

Each session's draw at (seed, frame position, stream, token id) comes from a counter-based hash,
so the same seeds give the same tokens whether a session runs alone or beside 63 others, on CPU
or GPU, and the whole batch samples in a handful of tensor ops (no per-session generator loop,
graph-capturable). Sampling is the Gumbel-max trick over each session's top-k candidates, which
draws exactly from softmax(logits / temperature) restricted to the top k.
"""

from __future__ import annotations

import dataclasses
import math

import torch

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors (values stay below 2**60: no overflow)."""
    x = x & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    x = (((x >> 16) ^ x) * _MIX) & _MASK32
    return (x >> 16) ^ x


def gumbel_noise(seed: torch.Tensor, position: torch.Tensor, stream: int, token_ids: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise [B, K] for `token_ids` [B, K], a pure function of (seed[B], position[B], stream, id)."""
    # The seed is mixed on its own first so that all its bits count (seed * 64 + stream would let
    # seeds 2**26 apart draw the same numbers).
    key = hash32(hash32(hash32(seed) + stream) ^ position)  # [B]
    bits = hash32(key[:, None] + token_ids * 0x9E37)
    uniform = (bits.double() + 0.5) / 2.0**32  # (0, 1), never 0 or 1
    return -torch.log(-torch.log(uniform))


@dataclasses.dataclass
class SamplingParams:
    """Per-slot sampling settings as tensors [B] (one row per slot)."""

    temperature: torch.Tensor  # float; 0 = greedy
    top_k: torch.Tensor  # long, >= 1
    seed: torch.Tensor  # long


def sample(logits: torch.Tensor, params: SamplingParams, position: torch.Tensor, stream: int,
           k_max: int) -> torch.Tensor:
    """Tokens [B] from `logits` [B, V] (float32), per-slot temperature and top-k.

    `k_max` (a Python int, so the shapes stay static for CUDA graphs) bounds every slot's top-k.
    """
    k_max = min(k_max, logits.shape[-1])
    values, ids = torch.topk(logits.float(), k_max, dim=-1)  # [B, K], sorted
    greedy = params.temperature <= 0
    tempered = values.double() / torch.where(greedy, 1.0, params.temperature.double())[:, None]
    noise = gumbel_noise(params.seed, position, stream, ids)
    scores = tempered + torch.where(greedy[:, None], 0.0, noise)
    beyond_k = torch.arange(k_max, device=logits.device)[None] >= params.top_k[:, None]
    scores = scores.masked_fill(beyond_k, -math.inf)
    return ids.gather(1, scores.argmax(dim=-1, keepdim=True))[:, 0]


def apply_text_biases(logits: torch.Tensor, recent_tokens: torch.Tensor, penalty: torch.Tensor,
                      pad_mult: torch.Tensor, temperature: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Repetition penalty and padding bias on text logits [B, V], both as in Kyutai's moshi server.

    `recent_tokens` [B, C]: each slot's recent non-padding text tokens, -1 where empty (or outside
    that slot's repetition context). CTRL penalty: a seen token's positive logit is divided by
    `penalty`, a negative one multiplied.

    `pad_mult` [B] is Kyutai's pad_mult (rust/moshi-core lm_generate_multistream.rs multiplies the
    padding probability of the tempered softmax by exp(pad_mult), then samples top-k from the result):
    adding pad_mult to the tempered padding logit is the same thing, and sample() takes its top-k
    after it. 0 leaves the model as it is; > 0 makes the agent pad (stay silent in text) more.
    Greedy slots (temperature 0) get pad_mult on the raw logit, as if tempered at 1.
    """
    batch, vocab = logits.shape
    seen = torch.zeros(batch, vocab + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, torch.where(recent_tokens < 0, vocab, recent_tokens), True)
    seen = seen[:, :vocab]
    factor = penalty[:, None].to(logits.dtype)
    penalised = torch.where(logits > 0, logits / factor, logits * factor)
    logits = torch.where(seen, penalised, logits)
    scale = torch.where(temperature > 0, temperature, 1.0)[:, None].to(logits.dtype)
    pad_bias = torch.zeros_like(logits)
    pad_bias[:, pad_id] = pad_mult.to(logits.dtype)
    return logits + pad_bias * scale  # sample() divides by the temperature: the bias lands untempered
