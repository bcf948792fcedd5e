"""Host memory of a training checkpoint, per rank, measured inside real Ray Train workers (FSDP, gloo).

Each worker resets its peak resident set size (`/proc/self/clear_refs`), saves a checkpoint with
the code the training worker uses, and reads the peak back: the growth over what it held before,
divided by the byte size of the model in the same run, is the ratio asserted. The whole-model
gather that checkpoints used to do (FSDP's full state dict on every rank) is measured the same
way beside it, so the probe is shown to see a whole model when one is gathered.

glibc keeps freed small blocks for reuse, which would hide new allocations from the resident set:
the workers set its mmap threshold low, so every tensor of note is mapped on allocation and
unmapped when freed.
"""

from __future__ import annotations

import ctypes
import gc
import json
import shutil
import sys
from pathlib import Path

import ray.cloudpickle
import ray.train
import torch
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from ray.train.torch import TorchTrainer

from plexray.model import layout, load_model
from plexray.model.loader import read_safetensors
from plexray.train import checkpoint, distributed, lora
from plexray.train.config import LoraConfig, OptimConfig
from plexray.train.optim import build_optimizer

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h); setting it also turns off glibc's dynamic threshold
WORKERS = 2


def _resident_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_growth_bytes(action) -> tuple[int, object]:
    """(bytes by which the resident set peaked above its level before `action()`, what it returned)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    before = _resident_kib("VmRSS")
    result = action()
    return (_resident_kib("VmHWM") - before) * 1024, result


def _measure_checkpoint(loop_config: dict) -> None:
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    torch.manual_seed(0)
    lm = load_model(loop_config["checkpoint"]).lm.train()
    model_bytes = sum(p.numel() * p.element_size() for p in lm.parameters())
    is_lora = loop_config["lora"]
    model = lora.apply_lora(lm, LoraConfig(), seed=0) if is_lora else lm
    wrapped = distributed.wrap_model(model, torch.device("cpu"), fsdp=True)
    optimizer, scheduler = build_optimizer(wrapped, OptimConfig(), total_steps=10)
    codes = torch.randint(0, 64, (1, 17, 12))
    output = wrapped(codes)  # one step, so that the optimizer holds state as it does at a real checkpoint
    output.logits[output.mask].float().mean().backward()
    optimizer.step()
    scheduler.step()
    local_optimizer_state = {name: {k: v.clone() for k, v in optimizer.state[param].items()}
                             for name, param in wrapped.named_parameters() if param in optimizer.state}

    def whole_model_on_every_rank():  # what every checkpoint gathered before
        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)):
            return wrapped.state_dict()

    def save():
        return checkpoint.save_checkpoint(wrapped, optimizer, scheduler, {"progress": {"step": 1}, "lora": is_lora},
                                          is_lora)

    whole_model_gather, whole_state = _peak_growth_bytes(whole_model_on_every_rank)
    checkpoint_growth, staging = _peak_growth_bytes(save)
    measured = {"model_bytes": model_bytes, "whole_model_gather": whole_model_gather, "checkpoint": checkpoint_growth,
                "resumes_exactly": _resumes_exactly(wrapped, staging, whole_state, local_optimizer_state, is_lora,
                                                    Path(loop_config["output"]))}
    rank = ray.train.get_context().get_world_rank()
    (Path(loop_config["output"]) / f"rank{rank}.json").write_text(json.dumps(measured))


def _resumes_exactly(wrapped, staging, whole_state: dict, local_optimizer_state: dict, is_lora: bool,
                     shared: Path) -> bool:
    """What rank 0 wrote holds the weights FSDP's own gather gives, and puts every rank's optimizer
    state back as it was."""
    written = shared / "checkpoint"
    if staging is not None:  # rank 0: share the checkpoint with the other ranks, as Ray's storage does
        shutil.copytree(staging.name, written)
    torch.distributed.barrier()
    if is_lora:
        expected = lora.adapter_state(distributed.unwrap(wrapped), whole_state)
        weights = read_safetensors(written / lora.ADAPTER_WEIGHTS)
    else:
        expected = layout.to_release_layout(whole_state)
        weights = read_safetensors(written / layout.LM_FILE)
    same_weights = weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)

    _, optimizer_files = checkpoint.read_training_state(written)
    fresh_optimizer, _ = build_optimizer(wrapped, OptimConfig(), total_steps=10)
    distributed.load_optimizer_state(wrapped, fresh_optimizer, optimizer_files["optimizer"])
    reloaded = {name: fresh_optimizer.state[param] for name, param in wrapped.named_parameters()
                if param in fresh_optimizer.state}
    same_optimizer = reloaded.keys() == local_optimizer_state.keys() and all(
        torch.equal(reloaded[name][key], value) for name, state in local_optimizer_state.items()
        for key, value in state.items())
    return same_weights and same_optimizer


def _measure_per_rank(checkpoint_dir: Path, is_lora: bool, output: Path) -> list[dict]:
    output.mkdir(parents=True)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    trainer = TorchTrainer(
        _measure_checkpoint,
        train_loop_config={"checkpoint": str(checkpoint_dir), "lora": is_lora, "output": str(output)},
        scaling_config=ray.train.ScalingConfig(num_workers=WORKERS, use_gpu=False),
        run_config=ray.train.RunConfig(storage_path=str(output / "ray"), name="checkpoint-memory"),
    )
    trainer.fit()
    return [json.loads((output / f"rank{rank}.json").read_text()) for rank in range(WORKERS)]


def test_lora_checkpoint_gathers_only_the_adapter(ray_cluster, demo_checkpoint, tmp_path):
    ranks = _measure_per_rank(demo_checkpoint, True, tmp_path / "lora")
    for rank, measured in enumerate(ranks):
        assert measured["whole_model_gather"] / measured["model_bytes"] > 0.9, (rank, measured)  # the probe sees it
        assert measured["resumes_exactly"], rank
    # Rank 0 holds what it writes: the adapter (6% of this toy model; far less of a 7B one), its
    # optimizer state (twice that) and their serialised bytes. The other ranks send their pieces.
    assert ranks[0]["checkpoint"] / ranks[0]["model_bytes"] < 0.5, ranks
    assert all(m["checkpoint"] / m["model_bytes"] < 0.1 for m in ranks[1:]), ranks


def test_full_fine_tuning_checkpoint_gathers_on_rank0_only(ray_cluster, demo_checkpoint, tmp_path):
    ranks = _measure_per_rank(demo_checkpoint, False, tmp_path / "full")
    for rank, measured in enumerate(ranks):
        assert measured["whole_model_gather"] / measured["model_bytes"] > 0.9, (rank, measured)
    # The other ranks send one parameter (and its optimizer state) at a time; rank 0 holds what it writes.
    assert all(m["checkpoint"] / m["model_bytes"] < 0.5 for m in ranks[1:]), ranks
    assert ranks[0]["checkpoint"] / ranks[0]["model_bytes"] > 0.9, ranks
    assert all(m["resumes_exactly"] for m in ranks), ranks

