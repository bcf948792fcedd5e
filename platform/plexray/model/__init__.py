"""Model loading: checkpoints (hub, local, demo) -> LM, Mimi, tokenizer, voices, prompt codes.

Importing this package changes nothing in the process: compilation of moshi's kernels is set by
loading a model (see plexray.model.compile).
"""

from plexray.model.compile import set_torch_compile
from plexray.model.loader import ModelBundle, load_model
from plexray.model.demo import ensure_demo_checkpoint, init_demo

__all__ = ["ModelBundle", "load_model", "set_torch_compile", "init_demo", "ensure_demo_checkpoint"]
