"""Choose the dialogue backend named in the config."""

from __future__ import annotations

from plexray.data.config import DialogueConfig
from plexray.data.dialogue.script import DialogueBackend


def backend_for(config: DialogueConfig) -> DialogueBackend:
    if config.backend == "embedded":
        from plexray.data.dialogue.embedded import EmbeddedBackend

        return EmbeddedBackend()
    from plexray.data.dialogue.llm import LLMBackend

    return LLMBackend(config.llm)
