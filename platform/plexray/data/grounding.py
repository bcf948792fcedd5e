"""Grounded conversations of a plan: the passages each one's prompt and dialogue are built on.

A conversation is grounded when its scenario (first) or its persona names a knowledge base. Its
query is the settings' `query`, else the scenario's situation and one of its items (chosen by the
conversation's seed, so conversations of a pair learn different facts). Passages are retrieved and
fitted to the token budget here, on the driver, with the model's own tokenizer, exactly as a
serving replica fits them (plexray.knowledge.prompt.fit_passages), so a training prompt never holds
more than a served one could.
"""

from __future__ import annotations

import functools
import json
import typing as tp

import sentencepiece

from plexray.data.personas import Library
from plexray.data.plan import PlanItem
from plexray.errors import ConfigError
from plexray.knowledge.config import KnowledgeConfig, KnowledgeSettings
from plexray.knowledge.errors import KnowledgeError
from plexray.knowledge.prompt import fit_passages
from plexray.knowledge.retrieval import KnowledgeBase, open_bases
from plexray.model import reference
from plexray.model.config import ModelConfig


def knowledge_of(library: Library, item: PlanItem) -> KnowledgeSettings | None:
    return library.scenarios[item.scenario_id].knowledge or library.personas[item.persona_id].knowledge


def query_of(library: Library, item: PlanItem, settings: KnowledgeSettings) -> str:
    if settings.query:
        return settings.query
    scenario = library.scenarios[item.scenario_id]
    return f"{scenario.situation} {scenario.items[item.seed % len(scenario.items)]}"


def open_library_bases(library: Library, config: KnowledgeConfig) -> dict[str, KnowledgeBase]:
    """Every base the library names, opened: ConfigError naming the persona or scenario when one is unusable."""
    named = [(f"persona {p.id}", p.knowledge) for p in library.personas.values() if p.knowledge] + \
            [(f"scenario {s.id}", s.knowledge) for s in library.scenarios.values() if s.knowledge]
    bases: dict[str, KnowledgeBase] = {}
    for owner, settings in named:
        try:
            bases.setdefault(settings.base, open_bases(config, [settings.base])[settings.base]).check_mode(settings.mode)
        except KnowledgeError as exc:
            raise ConfigError(f"data.library: {owner}: {exc}") from None
    return bases


def ground_plan(plan: tp.Sequence[PlanItem], library: Library, config: KnowledgeConfig,
                count_tokens: tp.Callable[[str], int]) -> dict[str, list[str]]:
    """Plan item id -> its passages (in prompt order), for the grounded items only."""
    bases = open_library_bases(library, config)

    @functools.lru_cache(maxsize=None)  # conversations of a pair often share a query
    def passages_for(base: str, query: str, top_k: int, max_tokens: int, mode: str) -> tuple[str, ...]:
        retrieved = bases[base].search(query, top_k, mode)
        return fit_passages([p.text for p in retrieved], max_tokens, count_tokens).passages

    grounded = {}
    for item in plan:
        settings = knowledge_of(library, item)
        if settings is not None:
            passages = passages_for(settings.base, query_of(library, item, settings), settings.top_k,
                                    settings.max_tokens, settings.mode)
            grounded[item.id] = list(passages)
    return grounded


def model_token_counter(model: ModelConfig) -> tp.Callable[[str], int]:
    """The number of text tokens the checkpoint's tokenizer makes of a string (only the tokenizer is loaded)."""
    files = reference.resolve(model.checkpoint, model.cache_dir)
    tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(files.tokenizer))
    return lambda text: len(tokenizer.encode(text))


def with_passages(items: list[dict], grounded: dict[str, list[str]]) -> list[dict]:
    """Plan rows with a `passages` column: JSON (one Arrow type for all rows), null for a conversation that
    is not grounded."""
    return [{**item, "passages": json.dumps(grounded.get(item["id"]))} for item in items]
