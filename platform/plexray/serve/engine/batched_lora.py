"""Many LoRA adapters in one batch: every slot runs the base LM plus its own adapter, in one step.

The targeted linears of the base LM are wrapped once, when the engine starts, by a BatchedLoraLinear
holding stacked tables for every device row of adapters (row 0: zeros, "no adapter"):

    A [rows, in, r_max], B [rows, r_max, out] (transposed once at load, so the matmuls need no transpose;
    the adapter's scaling folded into B)
    y [N, T, out] = base(x) + (x_n @ A[row_n]) @ B[row_n]       for each of the N slots in the batch

gathered by a per-slot row index that every wrapped linear shares (SlotRows), so one step applies
each slot's own adapter with two batched matmuls per linear: no Python loop over slots, and shapes
that never change (CUDA graphs capture the step once). An adapter of a smaller rank sits in the
first r columns of its row; the rest stay zero and add nothing.

Why not peft's own LoRA layers (one module per adapter, `set_adapter` to switch): peft applies one
active adapter set to the whole batch, and its mixed-batch path (`adapter_names=`) loops over the
adapters in Python, with a different set of kernels and shapes every step: neither batches slots on
different adapters in a shape-static step.

The depformer's per-codebook weights (moshi's `weights_per_step`: one Linear per step in a
ModuleList) need nothing special: each step's Linear is wrapped and has its own tables.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re

import torch
from moshi.modules.gating import ActivationGating, gating_forward_generic

from plexray.errors import PlexrayError

# The linears plexray train's two target settings put LoRA on (plexray.train.lora.lora_config), named
# relative to the LMModel; output heads never.
TARGET_PATTERNS = {
    "attention-gating": re.compile(r"(transformer|depformer)\.layers\.\d+\."
                                   r"(self_attn\.(in_projs|out_projs)\.\d+|gating(\.\d+)?\.(linear_in|linear_out))"),
    "all-linear": re.compile(r"(?!text_linear$|linears\.\d+$).+"),
}


class SlotRows:
    """Which adapter row each slot uses: one [B] long index, shared by every wrapped linear.

    `current` is what the linears read: all B slots for a batched step, or a view of one slot's
    entry while that slot prefills alone (a batch of 1). The step always reads the same tensor, so a
    captured CUDA graph sees row changes made in place.
    """

    def __init__(self, batch_size: int, device: torch.device):
        self.rows = torch.zeros(batch_size, dtype=torch.long, device=device)  # [B], 0 = no adapter
        self.current = self.rows

    @contextlib.contextmanager
    def only(self, slot: int):
        """Run the wrapped linears on a batch of one: `slot` alone (its prefill)."""
        self.current = self.rows[slot:slot + 1]  # [1] view
        try:
            yield
        finally:
            self.current = self.rows


class BatchedLoraLinear(torch.nn.Linear):
    """A base Linear (its very weight and bias) plus per-slot low-rank updates gathered from stacked tables.

    A Linear itself, because moshi reads its attention projections' device and dtype only from a Linear
    (StreamingMultiheadAttention._init_streaming_state). moshi's gating, though, calls `F.linear` on a
    Linear's weight directly, which would skip the update: AdapterTables puts the gatings it wraps on
    moshi's own generic path, which calls the linears.
    """

    def __init__(self, base: torch.nn.Linear, table_rows: int, max_rank: int, slot_rows: SlotRows):
        torch.nn.Module.__init__(self)  # not Linear's: the base's parameters are shared, not made anew
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        weight = base.weight
        self.register_buffer("lora_a", torch.zeros(table_rows, base.in_features, max_rank,
                                                   dtype=weight.dtype, device=weight.device))  # [rows, in, r]
        self.register_buffer("lora_b", torch.zeros(table_rows, max_rank, base.out_features,
                                                   dtype=weight.dtype, device=weight.device))  # [rows, r, out]
        self.slot_rows = slot_rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [N, ..., in]
        rows = self.slot_rows.current  # [N]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # [N, T, in]
        low = torch.bmm(flat, self.lora_a.index_select(0, rows))  # [N, T, r]
        base = torch.nn.functional.linear(flat, self.weight, self.bias)  # [N, T, out]
        # one kernel for the second matmul and the sum: base + low @ B[rows]
        return torch.baddbmm(base, low, self.lora_b.index_select(0, rows)).reshape(*x.shape[:-1], -1)


@dataclasses.dataclass
class LowRank:
    """One adapter's update of one linear: delta W = b @ a, its scaling already in b."""

    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]


class AdapterTables:
    """The wrapped linears of one LM and their stacked tables: `rows` - 1 adapters on the device at once.

    `install` wraps the LM in place; `remove` puts the original Linears back (the model can be used
    elsewhere again). Rows are written by the engine's tick thread only (see Engine._admit).
    """

    def __init__(self, lm: torch.nn.Module, targets: str, adapters: int, max_rank: int, batch_size: int):
        if targets not in TARGET_PATTERNS:
            raise PlexrayError(f"adapter targets {targets!r}: expected one of {sorted(TARGET_PATTERNS)}")
        if any(isinstance(module, BatchedLoraLinear) for module in lm.modules()):
            raise PlexrayError("this model's linears are already wrapped for adapters by another engine")
        self.lm = lm
        self.rows = adapters + 1
        self.max_rank = max_rank
        self.slot_rows = SlotRows(batch_size, lm.device)
        pattern = TARGET_PATTERNS[targets]
        names = [name for name, module in lm.named_modules()
                 if isinstance(module, torch.nn.Linear) and pattern.fullmatch(name)]
        self.linears: dict[str, BatchedLoraLinear] = {}
        self._originals: dict[str, torch.nn.Linear] = {}
        for name in names:
            owner, child = _owner(lm, name)
            self._originals[name] = getattr(owner, child)
            self.linears[name] = BatchedLoraLinear(self._originals[name], self.rows, max_rank, self.slot_rows)
            setattr(owner, child, self.linears[name])
        self._gatings = [module for module in lm.modules() if isinstance(module, ActivationGating)
                         and isinstance(module.linear_in, BatchedLoraLinear) | isinstance(module.linear_out,
                                                                                           BatchedLoraLinear)]
        for gating in self._gatings:  # an instance attribute: nn.Module.__call__ finds it before the class's
            gating.forward = functools.partial(gating_forward_generic, gating.linear_in, gating.linear_out,
                                               gating.activation)

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of every wrapped linear: what an adapter's tensors must fit."""
        return {name: (linear.out_features, linear.in_features) for name, linear in self.linears.items()}

    def write(self, row: int, updates: dict[str, LowRank]) -> None:
        """Put one adapter's updates in `row` (1...); linears it does not name get zeros."""
        assert 0 < row < self.rows, row
        for name, linear in self.linears.items():
            linear.lora_a[row].zero_()
            linear.lora_b[row].zero_()
            update = updates.get(name)
            if update is not None:
                rank = update.a.shape[0]
                linear.lora_a[row, :, :rank].copy_(update.a.t(), non_blocking=True)
                linear.lora_b[row, :rank].copy_(update.b.t(), non_blocking=True)

    def remove(self) -> None:
        for gating in self._gatings:
            del gating.forward
        for name, original in self._originals.items():
            owner, child = _owner(self.lm, name)
            setattr(owner, child, original)
        self.linears, self._originals, self._gatings = {}, {}, []


def _owner(lm: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """The module holding submodule `name`, and its attribute name there."""
    parent, _, child = name.rpartition(".")
    return (lm.get_submodule(parent) if parent else lm), child
