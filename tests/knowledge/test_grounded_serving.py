"""Grounded personas served for real: passages in the session's prompt, within budget, over both protocols.

One Serve instance (demo checkpoint) with a barista persona grounded in the shipped coffee-shop documents
and a plain assistant. The JSON protocol's 'connected' message says what the prompt holds.
"""

import asyncio
from pathlib import Path

import httpx
import pytest
import sentencepiece

from knowledge_helpers import DOCS, process_in_loop
from plexray.errors import ConfigError
from plexray.knowledge.config import KnowledgeConfig, KnowledgeSettings
from plexray.knowledge.indexer import index_documents
from plexray.knowledge.prompt import knowledge_section, prompt_with_passages
from plexray.model.layout import TOKENIZER_FILE
from plexray.serve.app.clients import ChatClient, Refused, VoiceClient
from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.grounding import SessionGrounding
from plexray.serve.config import PersonaConfig
from serve_on_loopback import loopback_fleet

BARISTA_PROMPT = "You are the barista of Harbor Lane Coffee."
BUDGET = 160  # the demo tokenizer (512 pieces) spends about 2.5 tokens a word
GUARD_S = 120  # failure guard for the whole client scenario (never a timing assertion)


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, GUARD_S))


@pytest.fixture(scope="module")
def knowledge_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("knowledge")
    index_documents([str(DOCS)], "cafe", KnowledgeConfig(root=str(root)), process=process_in_loop)
    return root


@pytest.fixture(scope="module")
def tokenizer(demo_checkpoint):
    return sentencepiece.SentencePieceProcessor(model_file=str(demo_checkpoint / TOKENIZER_FILE))


def _settings(knowledge_root, personas: str) -> list[str]:
    return [f"knowledge.root={knowledge_root}", "serve.sessions_per_replica=2", "serve.num_cpus=0.5",
            "serve.waiting_line={max_callers_per_replica: 0}", "serve.status_report_s=0.5",
            "knowledge.max_context_chars=200", f"serve.personas={personas}", "serve.default_persona=barista"]


PERSONAS = (f"{{barista: {{voice: NATF0, text_prompt: '{BARISTA_PROMPT}', knowledge: {{base: cafe, top_k: 3, "
            f"max_tokens: {BUDGET}, query: 'opening hours'}}}}, assistant: {{text_prompt: 'You help.'}}}}")


@pytest.fixture(scope="module")
def fleet(ray_cluster, knowledge_root):
    with loopback_fleet(_settings(knowledge_root, PERSONAS)) as urls:
        yield urls


async def _connected(fleet, persona: str, **params) -> dict:
    async with VoiceClient.connect(f"{fleet['ws']}/ws/voice/{persona}", **params) as client:
        connected = await client.handshake()
        await client.send({"type": "end"})
        return connected


def test_the_callers_context_grounds_the_prompt_within_budget(fleet, tokenizer):
    connected = _run(_connected(fleet, "barista", context="Is the lemon muffin gluten free?"))
    knowledge = connected["knowledge"]
    texts = [passage["text"] for passage in knowledge["passages"]]
    assert knowledge["base"] == "cafe" and knowledge["query"] == "Is the lemon muffin gluten free?"
    assert "lemon poppy seed muffin is gluten free" in texts[0]
    # The budget holds in the model's own tokens, and the count told is the real one.
    assert knowledge["tokens"] == len(tokenizer.encode(knowledge_section(texts))) <= BUDGET == knowledge["max_tokens"]
    assert knowledge["query_source"] == "context"
    assert knowledge["role_prompt_tokens"] == len(tokenizer.encode(BARISTA_PROMPT))
    assert knowledge["prompt_tokens"] == len(tokenizer.encode(prompt_with_passages(BARISTA_PROMPT, texts)))


def test_the_personas_default_query_when_the_caller_sends_none(fleet):
    knowledge = _run(_connected(fleet, "barista"))["knowledge"]
    assert knowledge["query"] == "opening hours"
    assert "Saturday and Sunday from 8 am to 4 pm" in knowledge["passages"][0]["text"]
    assert "knowledge" not in _run(_connected(fleet, "assistant"))


# Kyutai's server-info record as NVIDIA's client checks it (useServerInfo.ts: a zod schema; a record that
# lacks a field, or has one of another type, is logged as an error and not shown).
NVIDIA_SERVER_INFO = {"text_temperature": "number", "text_topk": "number", "audio_temperature": "number",
                      "audio_topk": "number", "pad_mult": "number", "repetition_penalty_context": "number",
                      "repetition_penalty": "number", "lm_model_file": "string", "instance_name": "string",
                      "build_info": "object"}
JSON_TYPES = {"number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "string": lambda v: isinstance(v, str), "object": lambda v: isinstance(v, dict)}
NVIDIA_BUILD_INFO = ("build_timestamp", "build_date", "git_branch", "git_timestamp", "git_date", "git_hash",
                     "git_describe", "rustc_host_triple", "rustc_version", "cargo_target_triple")


def _replica_log_lines(containing: str) -> list[str]:
    import ray

    serve_logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"  # the driver's session
    return [line for path in sorted(serve_logs.glob("replica_*.log"))
            for line in path.read_text(errors="replace").splitlines() if containing in line]


def test_binary_protocol_takes_context_tells_the_prompt_and_refuses_an_oversized_one(fleet, tokenizer):
    async def scenario():
        async with ChatClient.connect(fleet["ws"] + "/api/chat", context="wifi password", text_topk=30,
                                      session_id="grounded-chat") as chat:
            await chat.handshake()  # a grounded session was prefilled
            info = await chat.next_event()  # then its 0x04: what the prompt holds
        with pytest.raises(Refused) as refused:
            async with ChatClient.connect(fleet["ws"] + "/api/chat", context="x" * 201) as chat:
                await chat.handshake()
        return info, refused.value

    (kind, record), refused = _run(scenario())
    assert refused.code == 1008 and "context has 201 characters; at most 200" in refused.message
    # NVIDIA's web client shows this record unchanged: every field it requires, of the type it requires.
    assert kind == "metadata" and record["text_topk"] == 30
    assert all(JSON_TYPES[expected](record.get(field)) for field, expected in NVIDIA_SERVER_INFO.items()), record
    assert all(isinstance(record["build_info"][field], str) for field in NVIDIA_BUILD_INFO)
    knowledge = record["knowledge"]
    texts = [passage["text"] for passage in knowledge["passages"]]
    assert knowledge["query"] == "wifi password" and knowledge["query_source"] == "context"
    assert "password is printed on every receipt" in texts[0]
    assert knowledge["role_prompt_tokens"] == len(tokenizer.encode(BARISTA_PROMPT))
    assert knowledge["prompt_tokens"] == len(tokenizer.encode(prompt_with_passages(BARISTA_PROMPT, texts)))
    assert knowledge["tokens"] == len(tokenizer.encode(knowledge_section(texts))) <= BUDGET
    # The session's log line says the same: token counts, query, each passage's id and source.
    [opened] = _replica_log_lines("client label 'grounded-chat'")
    session_id = opened.split("session ", 1)[1].split(":", 1)[0]
    [prompt_line] = _replica_log_lines(f"session {session_id}: prompt of")
    assert (f"prompt of {knowledge['prompt_tokens']} tokens: role {knowledge['role_prompt_tokens']} + passages "
            f"{knowledge['tokens']} (budget {BUDGET}, {knowledge['left_out']} left out)") in prompt_line
    assert "query 'wifi password' (context)" in prompt_line
    assert all(f"{p['id']} ({Path(p['source']).name})" in prompt_line for p in knowledge["passages"])


def test_json_protocol_refuses_an_oversized_context_and_context_for_a_plain_persona(fleet):
    for persona, context, problem in (("barista", "y" * 300, "context has 300 characters"),
                                      ("assistant", "menu", "has no knowledge base")):
        with pytest.raises(Refused) as refused:
            _run(_connected(fleet, persona, context=context))
        assert refused.value.code == 1008 and problem in refused.value.message


def test_status_lists_each_personas_knowledge_base(fleet):
    adapters = {a["name"]: a for a in httpx.get(fleet["http"] + "/voice/status", timeout=30).json()["adapters"]}
    assert adapters["assistant"]["knowledge"] is None
    barista = adapters["barista"]["knowledge"]
    assert barista["base"] == "cafe" and barista["max_tokens"] == BUDGET and barista["documents"] == 4
    assert barista["passages"] > 0


def test_a_missing_or_empty_base_fails_the_deploy(knowledge_root, tmp_path, ray_cluster):
    from plexray.serve.app.builders import sessions_app

    missing = "{barista: {knowledge: {base: menus}}}"
    with pytest.raises(ConfigError, match=r"serve.personas.barista.knowledge: knowledge base 'menus' does not exist"):
        sessions_app({"set": _settings(knowledge_root, missing)})
    index_documents([str(DOCS / "nothing.md")], "hollow", KnowledgeConfig(root=str(knowledge_root)),
                    process=process_in_loop)
    with pytest.raises(ConfigError, match="'hollow' .* is empty"):
        sessions_app({"set": _settings(knowledge_root, "{barista: {knowledge: {base: hollow}}}")})


def test_session_grounding_without_serve(knowledge_root, tokenizer):
    """The replica's grounding step alone: prompt layout, budget, and the refusals."""
    persona = PersonaConfig(text_prompt=BARISTA_PROMPT, knowledge=KnowledgeSettings(base="cafe", max_tokens=80))
    grounding = SessionGrounding({"barista": persona}, KnowledgeConfig(root=str(knowledge_root), max_context_chars=50),
                                 lambda text: len(tokenizer.encode(text)))
    try:
        result = asyncio.run(grounding.ground("barista", persona, BARISTA_PROMPT, "loyalty card stamps"))
        texts = [p["text"] for p in result.info["passages"]]
        assert result.text_prompt == prompt_with_passages(BARISTA_PROMPT, texts)
        assert result.info["tokens"] <= 80 and "Ten stamps" in texts[0]
        assert result.info["role_prompt_tokens"] == len(tokenizer.encode(BARISTA_PROMPT))
        assert result.info["prompt_tokens"] == len(tokenizer.encode(result.text_prompt))
        with pytest.raises(AdmissionDenied, match="at most 50"):
            grounding.query(persona.knowledge, "z" * 51)
        # No query at all (no context, no default): the persona's prompt is served as it is.
        assert asyncio.run(grounding.ground("barista", persona, BARISTA_PROMPT, None)) is None
    finally:
        grounding.close()


def test_a_context_that_matches_nothing_falls_back_on_the_personas_query(knowledge_root, tokenizer):
    """A caller's context no passage matches grounds the prompt as no context would (the persona's
    default query), not with nothing; without a default query the persona's prompt is served alone."""
    knowledge = KnowledgeSettings(base="cafe", max_tokens=BUDGET, query="opening hours")
    persona = PersonaConfig(text_prompt=BARISTA_PROMPT, knowledge=knowledge)
    no_default = PersonaConfig(text_prompt=BARISTA_PROMPT, knowledge=knowledge.model_copy(update={"query": None}))
    grounding = SessionGrounding({"barista": persona, "plain": no_default}, KnowledgeConfig(root=str(knowledge_root)),
                                 lambda text: len(tokenizer.encode(text)))
    try:
        fallen_back = asyncio.run(grounding.ground("barista", persona, BARISTA_PROMPT, "zebra quokka"))
        assert fallen_back.info["query"] == "opening hours"
        assert fallen_back.info["query_source"] == "persona default: the context matched no passage"
        assert "Saturday and Sunday from 8 am to 4 pm" in fallen_back.info["passages"][0]["text"]
        without_context = asyncio.run(grounding.ground("barista", persona, BARISTA_PROMPT, None))
        assert without_context.text_prompt == fallen_back.text_prompt
        assert without_context.info["query_source"] == "persona default"
        bare = asyncio.run(grounding.ground("plain", no_default, BARISTA_PROMPT, "zebra quokka"))
        assert bare.text_prompt == BARISTA_PROMPT and bare.info["passages"] == [] and bare.info["tokens"] == 0
    finally:
        grounding.close()
