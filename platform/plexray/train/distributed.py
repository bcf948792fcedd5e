"""Sharding the model across workers, and the collectives the loop needs.

FSDP1 with one unit per StreamingTransformerLayer and `use_orig_params=True` (frozen base and
trainable LoRA weights share flat parameters): torch's FSDP2 `fully_shard` fails on moshi's
layers, and Ray's `prepare_model(parallel_strategy="fsdp")` refuses to run without CUDA, so the
wrapping is done here. Works with gloo on CPU and NCCL on GPU.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from moshi.modules.transformer import StreamingTransformerLayer
from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.nn.parallel import DistributedDataParallel as DDP


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small tensor over workers (identity with one worker)."""
    if world_size() == 1:
        return values
    reduced = values.to(device)
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced.to(values.device)


def wrap_model(model: torch.nn.Module, device: torch.device, fsdp: bool) -> torch.nn.Module:
    """Plain model on one worker; FSDP (or DDP when fsdp is off) on several."""
    model = model.to(device)
    if world_size() == 1:
        return model
    if fsdp:
        return FSDP(model, auto_wrap_policy=ModuleWrapPolicy({StreamingTransformerLayer}), use_orig_params=True,
                    device_id=device)  # on CPU too: without it FSDP looks for an accelerator
    return DDP(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, (FSDP, DDP)) else model


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (over all shards) and return it before clipping."""
    if isinstance(model, FSDP):
        return model.clip_grad_norm_(max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _full_state_context(model: FSDP):
    # Offloading is for GPU memory; on CPU it frees the very tensors being copied (segfaults in torch 2.9).
    offload = model.compute_device.type == "cuda"
    return FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                                FullStateDictConfig(offload_to_cpu=offload, rank0_only=False),
                                FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=False))


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict with the inner module's names (a collective under FSDP: all ranks call it)."""
    if isinstance(model, FSDP):
        with _full_state_context(model):
            return model.state_dict()
    return unwrap(model).state_dict()


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed so that a fresh run of the same model loads it (collective under FSDP)."""
    if isinstance(model, FSDP):
        with _full_state_context(model):
            return FSDP.optim_state_dict(model, optimizer)
    return optimizer.state_dict()


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if isinstance(model, FSDP):
        with _full_state_context(model):
            state = FSDP.optim_state_dict_to_load(model, optimizer, state)
    optimizer.load_state_dict(state)


def autocast_dtype(device_type: str, bf16: bool) -> torch.dtype | None:
    """bfloat16 autocast on GPU when asked; CPU runs in the weights' dtype."""
    return torch.bfloat16 if device_type == "cuda" and bf16 else None
