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
        # Once sharded, each parameter is a flat view of this rank's piece of it: remember the
        # full shapes, to put the pieces of a gathered parameter back together.
        full_shapes = {name: param.shape for name, param in model.named_parameters()}
        wrapped = FSDP(model, auto_wrap_policy=ModuleWrapPolicy({StreamingTransformerLayer}), use_orig_params=True,
                       device_id=device)  # on CPU too: without it FSDP looks for an accelerator
        wrapped.full_parameter_shapes = full_shapes
        return wrapped
    return DDP(model, device_ids=[device] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, (FSDP, DDP)) else model


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (over all shards) and return it before clipping."""
    if isinstance(model, FSDP):
        return model.clip_grad_norm_(max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)



def parameters_on_rank0(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The model's parameters (only the trainable ones: a LoRA adapter and what trains with it), whole
    and on the CPU, with the inner module's names, on rank 0; {} on other ranks. A collective: every
    rank calls it. (The LM has no persistent buffers: its parameters are its whole state.)

    One parameter moves at a time, and for LoRA the frozen base, most of the model, never moves.
    """
    selected = [(name, param) for name, param in model.named_parameters() if param.requires_grad or not trainable_only]
    if not isinstance(model, FSDP):  # every rank holds whole parameters
        return {name: param.detach().cpu() for name, param in selected} if rank() == 0 else {}
    state = {}
    for fsdp_name, param in selected:
        pieces = _gather_pieces(param.detach())
        if pieces is not None:
            name = _inner_name(fsdp_name)
            state[name] = torch.cat(pieces).view(model.full_parameter_shapes[name])
    return state


def optimizer_state_on_rank0(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state on rank 0 ({} on other ranks; a collective), keyed so that a fresh run of the
    same model loads it: under FSDP, FSDP's full optimizer state dict (parameter names, whole tensors).

    Built here one parameter at a time rather than by `FSDP.optim_state_dict`, which gathers the state
    of a whole wrapped unit (frozen weights' share included) on every rank.
    """
    if not isinstance(model, FSDP):
        return optimizer.state_dict() if rank() == 0 else {}
    names = {param: _inner_name(name) for name, param in model.named_parameters()}
    state = {}
    for param, name in names.items():
        if not param.requires_grad:
            continue
        # A rank whose piece of the parameter is empty got no gradient for it, so holds no state.
        pieces = _gather_pieces(optimizer.state.get(param, {}))
        if pieces is None:
            continue
        merged = {}
        for key in sorted({key for piece in pieces for key in piece}):
            values = [piece[key] for piece in pieces if key in piece]
            # 0-d values (Adam's step) are the same on every rank; the others are pieces like the parameter's.
            whole = values[0] if values[0].dim() == 0 else torch.cat(values).view(model.full_parameter_shapes[name])
            merged[key] = whole
        if merged:
            state[name] = merged
    groups = [{**{key: value for key, value in group.items() if key != "params"},
               "params": [names[param] for param in group["params"]]} for group in optimizer.param_groups]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a state that `optimizer_state_on_rank0` wrote (every rank reads the checkpoint's file)."""
    if isinstance(model, FSDP):
        # Offloading is for GPU memory; on CPU it frees the very tensors being copied (segfaults in torch 2.9).
        offload = model.compute_device.type == "cuda"
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=offload),
                                  FullOptimStateDictConfig(offload_to_cpu=offload)):
            state = FSDP.optim_state_dict_to_load(model, optimizer, state)
    optimizer.load_state_dict(state)


def _gather_pieces(local: torch.Tensor | dict[str, torch.Tensor]) -> list | None:
    """Every rank's piece of something sharded (a tensor, or a dict of tensors), in rank order, on
    rank 0; None on other ranks. Under FSDP (`use_orig_params=True`) each parameter is a 1-D view of
    this rank's piece of it, and the pieces of all ranks, in rank order, are the flattened parameter."""
    # Copies, on the CPU: pickling a view would send the whole flat storage it views.
    if isinstance(local, torch.Tensor):
        local = local.to("cpu", copy=True)
    else:
        local = {key: value.to("cpu", copy=True) for key, value in local.items()}
    pieces = [None] * world_size() if rank() == 0 else None
    dist.gather_object(local, pieces, dst=0)
    return pieces


def _inner_name(fsdp_name: str) -> str:
    return fsdp_name.replace("_fsdp_wrapped_module.", "")  # what FSDP1 adds to the names of wrapped units


def autocast_dtype(device_type: str, bf16: bool) -> torch.dtype | None:
    """bfloat16 autocast on GPU when asked; CPU runs in the weights' dtype."""
    return torch.bfloat16 if device_type == "cuda" and bf16 else None
