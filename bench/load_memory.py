"""Host memory of loading an LM checkpoint: peak resident set / checkpoint file size, in one run.

    .venv/bin/python bench/load_memory.py [--synthetic-gb 1.0]

Two checkpoints: the demo's model.safetensors, and a synthetic one of about --synthetic-gb written
here (the PersonaPlex architecture at a size that gives that file). Each is loaded by plexray's
loader (`load_lm`: tensor by tensor into the meta-built LM) and, as the baseline, by the whole-file
read it replaced (every tensor read into host memory, then converted copies assigned). Each load
runs in a fresh process, which loads once to pay one-off costs, frees that, resets its peak resident
set, loads again and uses every weight, then reads the peak: the ratio counts only what the load
added. Loaded in the file's dtype (float32), a loader that allocates the weights once and nothing
more scores 1.0; converted to bfloat16 (half the file), 0.5. Prints JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

TARGET_RATIO = 1.2
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h); setting it also turns off glibc's dynamic threshold
# Both files hold float32 weights.
DTYPES = {"float32": "float32 (as stored)", "bfloat16": "bfloat16 (converted, as for GPU serving)"}


def _resident_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def whole_file_read(path: Path, lm_kwargs: dict, dtype: torch.dtype):
    """The loader before streaming, as the baseline: read the whole file, then convert and assign."""
    import safetensors.torch

    from plexray.model import architectures

    lm = architectures.build_lm(lm_kwargs, "meta", dtype)
    state = safetensors.torch.load_file(str(path))
    state = {name: t.to(dtype=dtype) if t.is_floating_point() else t for name, t in state.items()}
    lm.load_state_dict(state, strict=True, assign=True)
    return lm


def streamed(path: Path, lm_kwargs: dict, dtype: torch.dtype):
    from plexray.model.loader import load_lm

    return load_lm(path, lm_kwargs, "personaplex", dtype=dtype)


def measure_in_this_process(loader: str, path: Path, lm_kwargs: dict, dtype: torch.dtype) -> dict:
    import safetensors.torch  # noqa: F401  (imports first: only the load itself is measured)

    import plexray.model.loader  # noqa: F401

    # Freed heap blocks would be reused unseen by the resident set: map every sizeable allocation.
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 64 * 1024)
    load = {"streamed": streamed, "whole_file_read": whole_file_read}[loader]
    # A first load, freed, so that what is measured is the load and not one-off costs (library code
    # paged in on first use, allocator set-up); with every sizeable block mapped, its memory is returned.
    _use_every_weight(load(path, lm_kwargs, dtype))
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident set
    before = _resident_bytes("VmRSS")
    _use_every_weight(load(path, lm_kwargs, dtype))
    return {"peak_growth_bytes": _resident_bytes("VmHWM") - before}


def _use_every_weight(lm) -> float:
    """safetensors reads a tensor's pages when they are first used: use every weight, as a first forward would."""
    return sum(float(p.float().sum()) for p in lm.parameters())


def measure(loader: str, path: Path, lm_kwargs: dict, dtype: str) -> dict:
    """One load in a fresh process (a process's peak resident set only grows)."""
    out = subprocess.run([sys.executable, __file__, "--child", loader, str(path), json.dumps(lm_kwargs), dtype],
                         check=True, capture_output=True, text=True).stdout
    measured = json.loads(out.strip().splitlines()[-1])
    file_bytes = path.stat().st_size
    return {"file_mb": round(file_bytes / 2**20, 1), "peak_rss_growth_mb": round(measured["peak_growth_bytes"] / 2**20, 1),
            "peak_rss_over_file": round(measured["peak_growth_bytes"] / file_bytes, 3)}


def synthetic_lm_kwargs(target_bytes: float) -> dict:
    """The PersonaPlex architecture (16 depformer steps) with the temporal transformer deep enough
    for a float32 file of about `target_bytes`."""
    from plexray.model import architectures

    base = architectures.demo_lm_kwargs("personaplex", text_card=32000) | {"dim": 1024, "num_heads": 8}

    def size(layers: int) -> int:
        lm = architectures.build_lm(base | {"num_layers": layers}, "meta", torch.float32)
        return sum(p.numel() * 4 for p in lm.parameters())

    per_layer = size(2) - size(1)
    layers = max(1, round((target_bytes - size(1)) / per_layer) + 1)
    return base | {"num_layers": layers}


def write_synthetic(directory: Path, lm_kwargs: dict) -> Path:
    """A random float32 LM in the released key layout (written from memory: this process is not measured)."""
    import safetensors.torch

    from plexray.model import architectures, layout

    lm = architectures.build_lm(lm_kwargs, "cpu", torch.float32)
    path = directory / layout.LM_FILE
    safetensors.torch.save_file({k: v.contiguous() for k, v in layout.to_release_layout(lm.state_dict()).items()},
                                str(path))
    return path


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        loader, path, lm_kwargs, dtype = sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
        print(json.dumps(measure_in_this_process(loader, path, lm_kwargs, getattr(torch, dtype))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-gb", type=float, default=1.0)
    args = parser.parse_args()

    from plexray.model import reference
    from plexray.model.loader import read_checkpoint_config

    demo = reference.resolve("demo")
    checkpoints = {"demo": (demo.lm, read_checkpoint_config(demo, None).lm_kwargs)}
    with tempfile.TemporaryDirectory() as tmp:
        lm_kwargs = synthetic_lm_kwargs(args.synthetic_gb * 1e9)
        checkpoints["synthetic"] = (write_synthetic(Path(tmp), lm_kwargs), lm_kwargs)
        results = {}
        for name, (path, kwargs) in checkpoints.items():
            for dtype in DTYPES:
                result = {loader: measure(loader, path, kwargs, dtype) for loader in ("streamed", "whole_file_read")}
                result["baseline_over_streamed"] = round(
                    result["whole_file_read"]["peak_rss_over_file"] / result["streamed"]["peak_rss_over_file"], 2)
                result["streamed_meets_target"] = result["streamed"]["peak_rss_over_file"] <= TARGET_RATIO
                results[f"{name}, loaded as {DTYPES[dtype]}"] = result
    print(json.dumps({"target_peak_rss_over_file": TARGET_RATIO, **results}, indent=2))


if __name__ == "__main__":
    main()
