"""Knowledge-grounded sessions: retrieve for the caller's `context` (or the persona's default query) and
join the passages to the persona's prompt, inside the persona's token budget.

Bases are opened when the replica starts (and checked when the application is built: a persona
naming a missing or empty base fails the deploy, not the first call). Retrieval blocks on SQLite,
LanceDB or an embeddings endpoint, so it runs in a thread pool off the event loop, and its latency
is a metric (plexray_retrieval_ms).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
import typing as tp

from plexray.errors import ConfigError
from plexray.knowledge.config import KnowledgeConfig, KnowledgeSettings
from plexray.knowledge.errors import KnowledgeError
from plexray.knowledge.prompt import fit_passages, prompt_with_passages
from plexray.knowledge.retrieval import KnowledgeBase, open_bases
from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.app.personas import bad_request
from plexray.serve.config import PersonaConfig

CONTEXT_PARAMETER = "context"  # the query parameter, on /api/chat and /ws/voice/{persona}
RETRIEVAL_THREADS = 2  # retrievals are short; two keep a slow one from holding up the next caller
RETRY_AFTER_S = 5


def check_knowledge_bases(personas: tp.Mapping[str, PersonaConfig], config: KnowledgeConfig) -> dict[str, KnowledgeBase]:
    """Every base the personas name, opened; ConfigError naming the persona when one cannot be served."""
    bases: dict[str, KnowledgeBase] = {}
    for name, persona in sorted(personas.items()):
        settings = persona.knowledge
        if settings is None:
            continue
        try:
            base = bases.get(settings.base) or open_bases(config, [settings.base])[settings.base]
            base.check_mode(settings.mode)
        except KnowledgeError as exc:
            raise ConfigError(f"serve.personas.{name}.knowledge: {exc}") from None
        bases[settings.base] = base
    return bases


def describe_knowledge(personas: tp.Mapping[str, PersonaConfig], config: KnowledgeConfig) -> dict[str, dict | None]:
    """Per persona, its knowledge base for /voice/status: settings and what the base holds."""
    bases = check_knowledge_bases(personas, config)
    return {name: None if persona.knowledge is None else {
        **persona.knowledge.model_dump(include={"base", "mode", "top_k", "max_tokens"}),
        "documents": len(bases[persona.knowledge.base].manifest.get("documents", {})),
        "passages": bases[persona.knowledge.base].manifest["passages"]} for name, persona in personas.items()}


@dataclasses.dataclass(frozen=True)
class Grounding:
    text_prompt: str  # the persona's prompt with the passages joined (THE layout of plexray.knowledge.prompt)
    info: dict  # what the caller is told (the JSON protocol's 'connected', /api/chat's 0x04) and the log shows:
    # base, query and where it came from, passages (id, source, section, text), token counts and the budget

    def log(self, logger: logging.Logger, session_id: str) -> None:
        """The session's log line of its prompt: token counts, the query and the passages (id and source).
        Each value a separate argument: the replica's log filter cuts (and escapes) each on its own."""
        info = self.info
        passages = ", ".join(f"{p['id']} ({p['source'].rsplit('/', 1)[-1]})" for p in info["passages"])
        logger.info("session %s: prompt of %d tokens: role %d + passages %d (budget %d, %d left out); knowledge "
                    "base %s, query %r (%s); passages: %s", session_id, info["prompt_tokens"],
                    info["role_prompt_tokens"], info["tokens"], info["max_tokens"], info["left_out"], info["base"],
                    info["query"], info["query_source"], passages or "none")


class SessionGrounding:
    def __init__(self, personas: tp.Mapping[str, PersonaConfig], config: KnowledgeConfig,
                 count_tokens: tp.Callable[[str], int], telemetry=None):
        self.bases = check_knowledge_bases(personas, config)
        self.max_context_chars = config.max_context_chars
        self.count_tokens = count_tokens
        self.telemetry = telemetry
        self.executor = concurrent.futures.ThreadPoolExecutor(RETRIEVAL_THREADS, thread_name_prefix="retrieval")

    def query(self, settings: KnowledgeSettings | None, context: str | None) -> str | None:
        """The retrieval query of a session; AdmissionDenied (bad_request) for a `context` too long."""
        if context is not None and len(context) > self.max_context_chars:
            raise bad_request(f"{CONTEXT_PARAMETER} has {len(context)} characters; at most {self.max_context_chars}")
        if settings is None:
            if context:
                raise bad_request(f"this persona has no knowledge base: {CONTEXT_PARAMETER} is not accepted")
            return None
        return context.strip() if context and context.strip() else settings.query

    async def ground(self, persona_name: str, persona: PersonaConfig, text_prompt: str,
                     context: str | None) -> Grounding | None:
        """The session's grounded prompt, or None for a persona without knowledge (or with no query)."""
        settings = persona.knowledge
        query = self.query(settings, context)
        if settings is None or query is None:
            return None
        # A caller's context that matches no passage falls back on the persona's default query: the
        # persona then knows what it would know had the caller sent nothing, not nothing at all.
        if not (context and context.strip()):
            queries = [(query, "persona default")]
        else:
            queries = [(query, "context")] + ([(settings.query, "persona default: the context matched no passage")]
                                              if settings.query and settings.query != query else [])
        started = time.perf_counter()
        try:
            grounding = await asyncio.get_running_loop().run_in_executor(
                self.executor, self._ground, settings, text_prompt, queries)
        except KnowledgeError as exc:  # e.g. the embeddings endpoint of a dense base is down
            raise AdmissionDenied("knowledge_unavailable", f"retrieval failed: {exc}", CloseCode.TRY_AGAIN_LATER,
                                  RETRY_AFTER_S) from None
        if self.telemetry is not None:
            self.telemetry.retrieval((time.perf_counter() - started) * 1000, persona_name)
        return grounding

    def _ground(self, settings: KnowledgeSettings, text_prompt: str, queries: list[tuple[str, str]]) -> Grounding:
        """Search with the first query that retrieves a passage, fit to the budget, count the tokens (in
        the executor: SQLite and the tokenizer block)."""
        base = self.bases[settings.base]
        for query, query_source in queries:
            retrieved = base.search(query, settings.top_k, settings.mode)
            if retrieved:
                break
        fitted = fit_passages([p.text for p in retrieved], settings.max_tokens, self.count_tokens)
        used = [p for p in retrieved if p.text in fitted.passages]
        grounded_prompt = prompt_with_passages(text_prompt, fitted.passages)
        info = {"base": settings.base, "query": query, "query_source": query_source, "mode": settings.mode,
                "tokens": fitted.tokens, "max_tokens": settings.max_tokens, "left_out": fitted.left_out,
                "role_prompt_tokens": self.count_tokens(text_prompt),
                "prompt_tokens": self.count_tokens(grounded_prompt),
                "passages": [{key: value for key, value in p.to_json().items() if key != "score"} for p in used]}
        return Grounding(grounded_prompt, info)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
