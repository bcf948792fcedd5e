"""Grounded training data: dialogues that use retrieved facts, and system prompts laid out as served."""

import asyncio
import dataclasses
import json

import pytest
import sentencepiece

from knowledge_helpers import DOCS, LIBRARY, process_in_loop
from openai_stub import OpenAICompatibleServer
from plexray.data.config import DataConfig, DialogueConfig, LLMConfig
from plexray.data.dialogue.validate import grounding_problem
from plexray.data.dialogue.script import Dialogue, Turn
from plexray.data.grounding import ground_plan, query_of, with_passages
from plexray.data.personas import load_library
from plexray.data.plan import plan_conversations
from plexray.data.prompts import system_prompt
from plexray.data.rejects import read_rejects
from plexray.data.stages import synthesize_item
from plexray.errors import ConfigError
from plexray.knowledge.config import KnowledgeConfig
from plexray.knowledge.indexer import index_documents
from plexray.knowledge.prompt import knowledge_section
from plexray.model.layout import TOKENIZER_FILE
from plexray.model.prompt import SYSTEM_TAG, wrap_system_prompt
from plexray.serve.app.grounding import SessionGrounding
from plexray.serve.config import PersonaConfig

LIBRARY_FILES = {"persona_files": [str(LIBRARY / "personas.yaml")], "scenario_files": [str(LIBRARY / "scenarios.yaml")]}


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory) -> KnowledgeConfig:
    config = KnowledgeConfig(root=str(tmp_path_factory.mktemp("knowledge")))
    index_documents([str(DOCS)], "cafe", config, process=process_in_loop)
    return config


@pytest.fixture(scope="module")
def tokenizer(demo_checkpoint):
    return sentencepiece.SentencePieceProcessor(model_file=str(demo_checkpoint / TOKENIZER_FILE))


@pytest.fixture(scope="module")
def library():
    return load_library(LIBRARY_FILES["persona_files"], LIBRARY_FILES["scenario_files"])


def _config(**dialogue) -> DataConfig:
    return DataConfig(conversations_per_pair=2, library=LIBRARY_FILES, speech={"max_duration_s": 30},
                      dialogue=DialogueConfig(**dialogue))


def _rows(config, library, knowledge, tokenizer, output_dir) -> tuple[list[dict], dict]:
    plan = plan_conversations(config, library)
    grounded = ground_plan(plan, library, knowledge, lambda text: len(tokenizer.encode(text)))
    rows = []
    for item in with_passages([dataclasses.asdict(item) for item in plan], grounded):
        rows.extend(synthesize_item(item, config, library, output_dir))
    return rows, grounded


def test_grounded_dataset_prompts_carry_the_passages_laid_out_as_served(knowledge, tokenizer, library, tmp_path):
    config = _config()
    rows, grounded = _rows(config, library, knowledge, tokenizer, tmp_path)
    assert len(rows) == 2 and read_rejects(tmp_path) == {}
    persona, scenario = library.personas["barista-bea"], library.scenarios["menu-questions"]
    for row in rows:
        passages = grounded[row["id"]]
        assert passages and len(tokenizer.encode(knowledge_section(passages))) <= 160
        assert f"What you know: (1) {passages[0]}" in row["system_prompt"]
        # The same passages served to the same role text give the same prompt, token for token.
        item = next(i for i in plan_conversations(config, library) if i.id == row["id"])
        role = system_prompt(persona, scenario, item.prompt_detail).removeprefix(SYSTEM_TAG).removesuffix(SYSTEM_TAG)
        served_persona = PersonaConfig(text_prompt=role.strip(), knowledge=persona.knowledge.model_copy(
            update={"query": query_of(library, item, persona.knowledge)}))
        grounding = SessionGrounding({"bea": served_persona}, knowledge, lambda text: len(tokenizer.encode(text)))
        try:
            served = asyncio.run(grounding.ground("bea", served_persona, served_persona.text_prompt, None))
        finally:
            grounding.close()
        assert wrap_system_prompt(served.text_prompt) == row["system_prompt"]
        assert tokenizer.encode(wrap_system_prompt(served.text_prompt)) == tokenizer.encode(row["system_prompt"])
        # The embedded generator's agent speaks retrieved facts.
        agent_lines = [turn["text"] for turn in json.loads(row["transcript"]) if turn["speaker"] == "agent"]
        assert grounding_problem(Dialogue(tuple(Turn("agent", line) for line in agent_lines)), passages) is None


def test_a_dialogue_that_uses_no_retrieved_fact_is_rejected(knowledge, tokenizer, library, tmp_path):
    scenario = library.scenarios["menu-questions"]
    factless = scenario.model_copy(update={"agent_lines": ["I am not sure about the {item}.", "Ask me later."]})
    library = dataclasses.replace(library, scenarios={scenario.id: factless})
    rows, _ = _rows(_config(), library, knowledge, tokenizer, tmp_path)
    assert rows == []
    reasons = {record["reason"] for record in read_rejects(tmp_path).values()}
    assert reasons and all(reason.startswith("ungrounded: no agent turn uses a fact") for reason in reasons)


def test_fact_check_counts_paraphrases_with_the_facts_words_not_passing_mentions():
    passages = ["Pastries: The lemon poppy seed muffin is gluten free and costs $3.60."]
    said = lambda text: Dialogue((Turn("user", "Is the muffin gluten free?"), Turn("agent", text)))
    assert grounding_problem(said("Yes, our lemon poppy seed muffin has no gluten and it's 3.60."), passages) is None
    assert grounding_problem(said("The muffin? Ask my colleague."), passages).startswith("ungrounded")
    assert grounding_problem(said("anything"), []).startswith("ungrounded: the query retrieved no passage")
    assert grounding_problem(said("anything"), None) is None


def test_a_library_naming_a_missing_base_fails_before_any_work(library, tmp_path):
    with pytest.raises(ConfigError, match="data.library: persona barista-bea: knowledge base 'cafe' does not exist"):
        ground_plan(plan_conversations(_config(), library), library, KnowledgeConfig(root=str(tmp_path)), len)


class FactQuotingChat(OpenAICompatibleServer):
    """A chat-completions server whose agent answers with the first retrieved passage (or none at all)."""

    def __init__(self, quote: bool):
        self.quote = quote
        self.prompts: list[str] = []
        super().__init__(self._answer)

    def _answer(self, path: str, body: dict):
        self.prompts.append(body["messages"][0]["content"] + body["messages"][1]["content"])
        character = body["messages"][1]["content"]
        fact = character.split("(1) ", 1)[1].split(" (2) ", 1)[0].split(SYSTEM_TAG)[0]
        answer = f"Well, {fact}" if self.quote else "I could not say."
        turns = [{"speaker": "agent", "text": "Hi, what can I get you?"},
                 {"speaker": "user", "text": "Tell me about the pastries."},
                 {"speaker": "agent", "text": answer}, {"speaker": "user", "text": "Great."},
                 {"speaker": "agent", "text": "Anything else?"}, {"speaker": "user", "text": "No, thanks."}]
        return 200, {"choices": [{"message": {"role": "assistant", "content": json.dumps({"turns": turns})}}]}


@pytest.mark.parametrize("quote", [True, False])
def test_llm_backend_is_given_the_passages_and_checked(knowledge, tokenizer, library, tmp_path, quote):
    chat = FactQuotingChat(quote)
    try:
        config = _config(backend="llm", llm=LLMConfig(base_url=chat.base_url, backoff_s=0, max_retries=0))
        config = config.model_copy(update={"conversations_per_pair": 1})
        rows, grounded = _rows(config, library, knowledge, tokenizer, tmp_path)
    finally:
        chat.close()
    passages = next(iter(grounded.values()))
    assert "keeping their names, numbers and prices exactly" in chat.prompts[0]
    assert f"(1) {passages[0]}" in chat.prompts[0]
    if quote:
        assert len(rows) == 1 and f"(1) {passages[0]}" in rows[0]["system_prompt"]
    else:
        assert rows == [] and all(r["reason"].startswith("ungrounded") for r in read_rejects(tmp_path).values())
