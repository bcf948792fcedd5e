"""The one compile switch: whether moshi's kernels (rope, gating, norms) run through torch.compile.

moshi compiles those functions lazily and reads one process-wide flag at every call, so the switch
is process-wide too. It is set by loading a model (`model.compile` in the config, applied by
`load_model` and the data pipeline's codec loader), never by importing plexray: a process compiles
exactly when the model it loaded asked for it.

Compilation works on CPU (TorchInductor, with a C compiler) as well as on GPU, but on CPU each new
tensor shape costs seconds of compilation for little gain, so the config's default is off.
"""

from __future__ import annotations

from moshi.utils import compile as moshi_compile


def set_torch_compile(enabled: bool) -> None:
    """Compile (True) or run eagerly (False) moshi's kernels in this process from the next call on."""
    moshi_compile._compile_disabled = not enabled


def torch_compile_enabled() -> bool:
    return not moshi_compile._compile_disabled
