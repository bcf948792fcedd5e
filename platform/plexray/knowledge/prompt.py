"""The one layout of "system prompt + passages", shared by serving and training data.

    <role prompt> What you know: (1) <passage> (2) <passage> ...

One line (the prompt is forced into the text stream one token per 80 ms frame, so every token of
layout costs prefill time; numbered passages keep them apart in few tokens). Serving puts this in
the session's text prompt and the engine wraps it as '<system> ... <system>'; the data pipeline wraps
the same string for the training row, so a fine-tuned model sees at serving exactly the layout it
was taught with. Passages are added in rank order while the "What you know" section stays within
the token budget (counted with the model's own text tokenizer); one that does not fit is left out
and a shorter one after it may still join.
"""

from __future__ import annotations

import dataclasses
import re
import typing as tp

from plexray.model.prompt import SYSTEM_TAG

SECTION_HEADER = "What you know:"


def _clean(passage: str) -> str:
    """A passage on one line, without the system tag (a document must not be able to end the prompt)."""
    return re.sub(r"\s+", " ", passage.replace(SYSTEM_TAG, " ")).strip()


def knowledge_section(passages: tp.Sequence[str]) -> str:
    """'What you know: (1) ... (2) ...', or '' for no passages."""
    cleaned = [text for text in (_clean(p) for p in passages) if text]
    if not cleaned:
        return ""
    return " ".join([SECTION_HEADER, *(f"({number}) {text}" for number, text in enumerate(cleaned, 1))])


def prompt_with_passages(role_prompt: str, passages: tp.Sequence[str]) -> str:
    """The role prompt followed by the passages' section: THE layout (see the module's docstring)."""
    return " ".join(part for part in (role_prompt.strip(), knowledge_section(passages)) if part)


@dataclasses.dataclass(frozen=True)
class FittedPassages:
    passages: tuple[str, ...]  # in rank order, those that fit
    tokens: int  # of the knowledge section they make (0 for none)
    left_out: int  # retrieved passages that did not fit


def fit_passages(passages: tp.Sequence[str], max_tokens: int,
                 count_tokens: tp.Callable[[str], int]) -> FittedPassages:
    """The passages, in rank order, whose knowledge section counts at most `max_tokens` model tokens."""
    chosen: list[str] = []
    tokens = 0
    for passage in passages:
        candidate_tokens = count_tokens(knowledge_section([*chosen, passage]))
        if candidate_tokens <= max_tokens:
            chosen.append(passage)
            tokens = candidate_tokens
    return FittedPassages(tuple(chosen), tokens, len(passages) - len(chosen))
