"""Mimi's streaming ring past 10 s, per family (plexray.model.mimi_ring): the PersonaPlex family attends as
NVIDIA's fork (moshi 0.1) does, the Moshi family as PyPI moshi. Equality with NVIDIA's own latents past
10 s is checked against the goldens (test_reference_parity.py); here, the rule itself and where it applies."""

from __future__ import annotations

import torch
from moshi.modules.transformer import RingKVCache, StreamingMultiheadAttention

from plexray.model.mimi_ring import Moshi01RingKVCache

CAPACITY = 4


def valid_keys_per_step(ring_class, steps: int, exec_mask: torch.Tensor) -> list[list[int]]:
    """Keys each of 2 streams may attend to after each one-step write, as `positions >= 0` counts them."""
    ring = RingKVCache(2, 1, 1, CAPACITY, respect_exec_mask=True, device="cpu", dtype=torch.float32)
    ring.__class__ = ring_class
    counts = []
    for step in range(steps):
        key = torch.full((2, 1, 1, 1), float(step))
        counts.append((ring.complete(key, key, exec_mask).positions >= 0).sum(dim=1).tolist())
    return counts


def test_a_full_ring_leaves_out_its_oldest_entry_as_moshi_01_did():
    both = torch.tensor([True, True])
    # moshi 0.2 (PyPI): C keys once full; moshi 0.1 (NVIDIA's fork): C - 1, the slot written next left out.
    assert valid_keys_per_step(RingKVCache, 7, both) == [[1, 1], [2, 2], [3, 3], [4, 4], [4, 4], [4, 4], [4, 4]]
    assert valid_keys_per_step(Moshi01RingKVCache, 7, both) == [[1, 1], [2, 2], [3, 3], [3, 3], [3, 3], [3, 3],
                                                               [3, 3]]
    # Per stream: a stream that does not advance (the engine's exec mask) keeps its own count.
    assert valid_keys_per_step(Moshi01RingKVCache, 5, torch.tensor([True, False]))[-1] == [3, 0]


def test_each_family_streams_mimi_as_the_code_its_users_compare_with(engine_bundle, moshi_bundle):
    def rings(mimi) -> set[type]:
        with mimi.streaming(1):
            return {type(module._streaming_state.kv_cache) for module in mimi.modules()
                    if isinstance(module, StreamingMultiheadAttention)}

    assert rings(engine_bundle.mimi) == {Moshi01RingKVCache}  # PersonaPlex: NVIDIA's fork
    assert rings(moshi_bundle.mimi) == {RingKVCache}  # Moshi: PyPI moshi
