"""Model loading: checkpoints (hub, local, demo) -> LM, Mimi, tokenizer, voices, prompt codes."""

from plexray.model.loader import ModelBundle, load_model, set_torch_compile
from plexray.model.demo import ensure_demo_checkpoint, init_demo

set_torch_compile(False)  # CPU-friendly default for every process that imports plexray.model

__all__ = ["ModelBundle", "load_model", "set_torch_compile", "init_demo", "ensure_demo_checkpoint"]
