"""Calls longer than the context window: the prompt stays pinned, the conversation slides behind it.

moshi's temporal transformer keeps its keys and values in a ring of C = context entries (3000
frames, 240 s), one per position, written at `position % C`. Past C, a plain ring overwrites the
oldest entries first: the prompt (the persona and its voice) slides out and the agent forgets who
it is. `PinnedPromptKVCache` changes only where the conversation is written and what positions
the attention sees:

    ring index of position p:  p                        for p < P (the prompt: never overwritten)
                               P + (p - P) % (C - P)    for the conversation

Below C this is moshi's ring exactly (index = p), so a call that fits is computed as before, token
for token. Past C, the model attends to [the prompt] + [the last C - P conversation frames].

Positions. Keys are stored rotated by RoPE at the position they were written at, and the
attention scores depend only on the distance between the query's rotation and each key's. The
conversation keys keep their positions (distances 0 .. C - P - 1, as when they were fresh). The
prompt keys are re-rotated at every step past C so that the prompt sits right before the oldest
conversation frame kept: prompt entry j is at position `last - C + 1 + j`, at distance C - 1 - j
from the newest query. So the model sees the distances of a fresh window [prompt][recent frames],
never one longer than it was trained on (the distances only: past the first layer, a kept entry still
carries what it attended to when it was computed, docs/long-calls.md). Re-rotating from the prompt keys as first
written (un-rotated once, when the prompt is pinned) keeps rounding from accumulating over a long
call. Re-rotating costs a rotation and a copy over [B, H, n, D] in every layer, so the caller, which
knows every slot's position and prompt length on the host, sets `rerotate_frames` before each step:
n = the longest prompt among the slots that slide at this step, 0 when none does (no work at all).
On CPU, re-rotating the whole pinned capacity (1000 entries) every tick took a third of a demo-model
tick at B = 8. Under CUDA graphs, whose captured work cannot change from tick to tick, n is always the
whole pinned capacity.

Everything is per slot and written with tensor ops only (no host sync, static shapes), so slots of
any age share one batch and a CUDA graph captured once keeps working across slides.
"""

from __future__ import annotations

import math

import torch
from moshi.modules.transformer import KVCacheResult, RingKVCache, StreamingMultiheadAttention


def rotate(x: torch.Tensor, positions: torch.Tensor, max_period: float, interleave: bool) -> torch.Tensor:
    """RoPE rotation of `x` [B, H, T, D] to `positions` [B, T] (float32), with moshi's formula.

    Negative positions rotate backwards: rotate(rotate(x, p), -p) == x up to rounding.
    """
    dim = x.shape[-1]
    freqs = torch.exp(torch.arange(dim // 2, device=x.device, dtype=torch.float32)
                      * (-math.log(max_period) * 2 / dim))
    angles = freqs * positions[:, None, :, None]  # [B, 1, T, D/2]
    cos, sin = torch.cos(angles), torch.sin(angles)
    if interleave:
        pairs = x.view(*x.shape[:-1], dim // 2, 2)
        real, imag = pairs[..., 0].float(), pairs[..., 1].float()
    else:
        real, imag = x[..., :dim // 2].float(), x[..., dim // 2:].float()
    out_real, out_imag = real * cos - imag * sin, real * sin + imag * cos
    if interleave:
        return torch.stack([out_real.to(x.dtype), out_imag.to(x.dtype)], dim=-1).view(x.shape)
    return torch.cat([out_real.to(x.dtype), out_imag.to(x.dtype)], dim=-1)


class PinnedPromptKVCache(RingKVCache):
    """A RingKVCache (sharing its tensors) whose slots keep their first `prompt_len` entries pinned."""

    def __init__(self, ring: RingKVCache, prompt_capacity: int, max_period: float, interleave: bool):
        # No super().__init__: the ring's own storage is used, so moshi's state keeps working on it.
        assert ring.respect_exec_mask, "per-slot positions need a per-slot end offset"
        self.capacity, self.respect_exec_mask = ring.capacity, ring.respect_exec_mask
        self.cache, self.end_offset = ring.cache, ring.end_offset  # [2, B, H, C, D], [B]
        _, batch, heads, capacity, head_dim = ring.cache.shape
        if not 0 <= prompt_capacity < capacity:
            raise ValueError(f"prompt capacity {prompt_capacity} must leave room in a context of {capacity}")
        self.prompt_len = torch.zeros(batch, dtype=torch.long, device=ring.cache.device)
        # The pinned prompt keys as first written, un-rotated: [B, H, prompt_capacity, D].
        self.prompt_keys = ring.cache.new_zeros(batch, heads, prompt_capacity, head_dim)
        self.max_period, self.interleave = max_period, interleave
        self.rerotate_frames = prompt_capacity  # leading pinned entries re-rotated at the next step (docstring)

    def reset(self, reset_mask: torch.Tensor) -> None:
        super().reset(reset_mask)
        self.prompt_len[:] = torch.where(reset_mask, torch.zeros_like(self.prompt_len), self.prompt_len)

    def pin(self, slot: int, prompt_len: int) -> None:
        """Pin the slot's first `prompt_len` entries (its prompt, already written at positions 0..P-1)."""
        if prompt_len > self.prompt_keys.shape[2]:
            raise ValueError(f"prompt of {prompt_len} frames exceeds the pinned capacity {self.prompt_keys.shape[2]}")
        positions = torch.arange(prompt_len, device=self.cache.device, dtype=torch.float32)
        written = self.cache[0, slot:slot + 1, :, :prompt_len]
        self.prompt_keys[slot:slot + 1, :, :prompt_len] = rotate(written, -positions[None], self.max_period,
                                                                 self.interleave)
        self.prompt_len[slot] = prompt_len

    def _ring_index(self, position: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
        """Ring index of `position` [B, ...] for slots with `prompt_len` [B, 1...]."""
        conversation = position - prompt_len
        return torch.where(conversation < 0, position,
                           prompt_len + conversation % (self.capacity - prompt_len))

    def complete(self, k: torch.Tensor, v: torch.Tensor, exec_mask: torch.Tensor) -> KVCacheResult:
        batch, heads, steps, head_dim = k.shape
        device, capacity = self.end_offset.device, self.capacity
        prompt_len = self.prompt_len.view(-1, 1)  # [B, 1]
        new_positions = self.end_offset.view(-1, 1) + torch.arange(steps, device=device)  # [B, T]
        index = self._ring_index(new_positions, prompt_len).view(batch, 1, steps, 1).expand(-1, heads, -1, head_dim)
        # Only executing slots write: a paused slot past C must not overwrite a live entry.
        executing = exec_mask.view(-1, 1, 1, 1)
        self.cache[0].scatter_(2, index, torch.where(executing, k, self.cache[0].gather(2, index)))
        self.cache[1].scatter_(2, index, torch.where(executing, v, self.cache[1].gather(2, index)))

        last = self.end_offset.view(-1, 1) + steps - 1  # [B, 1] position of the newest entry
        sliding = last >= capacity
        entries = torch.arange(capacity, device=device).view(1, -1)  # [1, C] ring indexes
        conversation_positions = last - (self._ring_index(last, prompt_len) - entries) % (capacity - prompt_len)
        prompt_positions = torch.where(sliding, last - capacity + 1 + entries, entries)
        positions = torch.where(entries < prompt_len, prompt_positions, conversation_positions)
        positions = torch.where(entries > last, torch.full_like(positions, -1), positions)  # never written

        # Re-rotate the pinned prompt of sliding slots to sit right before the kept conversation.
        pinned = self.rerotate_frames
        if pinned:
            rerotated = rotate(self.prompt_keys[:, :, :pinned], prompt_positions[:, :pinned].float(), self.max_period,
                               self.interleave)
            is_pinned = ((entries[:, :pinned] < prompt_len) & sliding & exec_mask.view(-1, 1)).view(batch, 1, pinned, 1)
            self.cache[0][:, :, :pinned] = torch.where(is_pinned, rerotated, self.cache[0][:, :, :pinned])

        self.end_offset[:] = torch.where(exec_mask, self.end_offset + steps, self.end_offset)
        return KVCacheResult(self.cache[0], self.cache[1], positions)


def pin_prompts(lm, batch_size: int, prompt_capacity: int) -> list[PinnedPromptKVCache]:
    """Swap the KV ring of every temporal-transformer layer (in streaming mode) for a pinned one."""
    caches = []
    for layer in lm.transformer.layers:
        attention: StreamingMultiheadAttention = layer.self_attn
        state = attention._streaming_state
        assert state is not None and state.batch_size == batch_size, "the LM must be streaming with this batch"
        rope = attention.rope
        state.kv_cache = PinnedPromptKVCache(state.kv_cache, prompt_capacity, rope.max_period, rope.interleave)
        caches.append(state.kv_cache)
    return caches
