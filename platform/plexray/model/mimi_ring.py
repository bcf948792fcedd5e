"""How Mimi's streaming attention keeps its last 10 s: the one place where the two families' Mimi differ.

Mimi's encoder and decoder transformers stream through a ring KV cache of `context` = 250 steps (10 s
at 25 Hz). Once the ring is full, moshi 0.1 (NVIDIA's PersonaPlex fork, `RingKVCache.complete`)
computes the key positions from the end offset *after* writing the new step, which gives the slot
about to be overwritten next (the oldest entry) a position in the future, so the causal mask leaves
it out and attention sees 249 keys; moshi 0.2.13 (PyPI) gives it its true position and attention
sees 250 (SPEC section 8). The two agree on the first 124 frames of a stream and drift after: latents
differ by ~1e-5 and deep codebooks flip.

Each family follows the code its users compare against: the PersonaPlex family NVIDIA's fork (its
server, its voices and the goldens in tests/golden were made with it), the Moshi family PyPI moshi.
plexray runs PyPI moshi, so the PersonaPlex family's Mimi gets moshi 0.1's rule here, for every
streaming use (the serving engine, voice prompts, evaluation).
"""

from __future__ import annotations

import types
import typing as tp

import torch
from moshi.models.compression import MimiModel
from moshi.modules.transformer import KVCacheResult, RingKVCache, StreamingMultiheadAttention

MimiRing = tp.Literal["moshi-0.1", "moshi-0.2"]


class Moshi01RingKVCache(RingKVCache):
    """PyPI's ring, with the oldest entry of a full ring left out of attention, as moshi 0.1 does.

    After a step, the slot `end_offset % capacity` holds the oldest entry (the next step overwrites
    it). moshi 0.1 positions it at `end_offset`, after every query, so no query attends to it; before
    the ring is full that slot is empty and already left out. Marking it invalid (-1) here has the
    same effect on every query of the step, and leaves every other position as PyPI computes it (they
    are equal in both versions)."""

    def complete(self, k: torch.Tensor, v: torch.Tensor, exec_mask: torch.Tensor) -> KVCacheResult:
        result = super().complete(k, v, exec_mask)
        slots = torch.arange(self.capacity, device=self.end_offset.device)  # [C]
        next_slot = (self.end_offset % self.capacity).view(-1, 1)  # [B, 1], end_offset already advanced
        positions = torch.where(slots == next_slot, torch.full_like(result.positions, -1), result.positions)
        return KVCacheResult(result.keys, result.values, positions)


def use_ring(mimi: MimiModel, ring: MimiRing) -> MimiModel:
    """Make every streaming self-attention of `mimi` keep its KV cache by `ring`'s rule (returns `mimi`).

    moshi builds a layer's ring when streaming starts (`_init_streaming_state`), so that step is
    replaced per attention module (bound to it: a deep copy of Mimi rebinds it to the copy) by one
    that gives the ring moshi 0.1's `complete` (same state, same tensors).
    """
    if ring == "moshi-0.2":
        return mimi
    for module in mimi.modules():
        if isinstance(module, StreamingMultiheadAttention) and not module.cross_attention:
            module._init_streaming_state = types.MethodType(_init_with_moshi01_ring, module)
    return mimi


def _init_with_moshi01_ring(attention: StreamingMultiheadAttention, batch_size: int):
    state = StreamingMultiheadAttention._init_streaming_state(attention, batch_size)
    if isinstance(state.kv_cache, RingKVCache):
        state.kv_cache.__class__ = Moshi01RingKVCache  # a subclass adding no state: only `complete` differs
    return state
