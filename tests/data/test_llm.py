"""The chat-completions client, the LLM dialogue backend and back-annotation, against a local server.

The server (below) speaks the OpenAI chat-completions API; its answers depend on the request,
so tests can provoke each path:
- a dialogue request for Angry Alex gets two agent turns in a row (fails validation);
- one for Furious Frank always gets HTTP 500 (retried, then quarantined);
- every other dialogue request first gets HTTP 503 once (retried), then a valid dialogue, in a
  ```json fence with prose around it (parsed anyway);
- an annotation request whose transcript contains BROKEN gets prose without JSON.
"""

import collections
import json
import threading

import pytest

from plexray.data.annotate import annotate_file
from plexray.data.config import DataConfig, LLMConfig
from plexray.data.dialogue.llm import ChatClient, LLMBackend
from plexray.data.errors import LLMError
from plexray.data.personas import load_library
from plexray.data.plan import plan_conversations
from plexray.data.rejects import read_rejects
from plexray.data.stages import synthesize_item

from openai_stub import OpenAICompatibleServer

LIBRARY = load_library()


class ChatServer:
    def __init__(self):
        self.requests = collections.Counter()
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, dict | str]:
        system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
        if "role prompts" in system:
            if "BROKEN" in user:
                return 200, _completion("I would rather not say.")
            return 200, _completion(json.dumps({"system_prompt": "You are a customer who wants tea."}))
        key = user.split(",")[0]
        with self.lock:
            self.requests[key] += 1
            count = self.requests[key]
        if "Furious Frank" in user:
            return 500, "upstream exploded"
        if count == 1:
            return 503, "warming up"
        if "Angry Alex" in user:
            turns = [{"speaker": "agent", "text": "Fix it."}, {"speaker": "agent", "text": "Now!"}] * 3
        else:
            turns = [{"speaker": s, "text": f"Line {i} about my latte."} for i, s in enumerate(["agent", "user"] * 3)]
        return 200, _completion("Sure! ```json\n" + json.dumps({"turns": turns}) + "\n``` Enjoy.")


def _completion(content: str) -> dict:
    return {"id": "x", "object": "chat.completion", "model": "test",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


@pytest.fixture(scope="module")
def chat_server():
    state = ChatServer()

    def answer(path: str, body: dict):
        return state.answer(body) if path == "/v1/chat/completions" else (404, {"error": "not found"})

    with OpenAICompatibleServer(answer) as server:
        state.base_url = server.base_url
        yield state


def _llm(server, **overrides):
    return LLMConfig(**{"base_url": server.base_url, "backoff_s": 0.0, "max_retries": 2, **overrides})


def test_backend_retries_then_parses_fenced_json(chat_server):
    dialogue = LLMBackend(_llm(chat_server)).write(LIBRARY.personas["cheerful-chloe"], LIBRARY.scenarios["wrong-order"],
                                                   1, 6, 10, "agent")
    assert [t.speaker for t in dialogue.turns] == ["agent", "user"] * 3
    assert chat_server.requests["<system> You are Cheerful Chloe"] == 2  # one 503, then the answer


def test_client_gives_up_with_a_clear_error(chat_server):
    client = ChatClient(_llm(chat_server))
    with pytest.raises(LLMError, match="gave up after 3 attempts; last: HTTP 500"):
        client.complete_json([{"role": "system", "content": "x"}, {"role": "user", "content": "You are Furious Frank, x"}])
    with pytest.raises(LLMError, match="no LLM endpoint"):
        ChatClient(LLMConfig(base_url=None, api_key_env="PLEXRAY_TEST_UNSET"))


def test_invalid_and_failing_dialogues_are_rejected_with_reasons(chat_server, tmp_path):
    config = DataConfig.model_validate({
        "dialogue": {"backend": "llm", "min_turns": 4, "max_turns": 10, "llm": _llm(chat_server).model_dump()},
        "library": {"personas": ["angry-alex", "furious-frank"], "scenarios": ["wrong-order"]},
        "max_attempts": 2})
    library = load_library(personas=["angry-alex", "furious-frank"], scenarios=["wrong-order"])
    for item in plan_conversations(config, library):
        assert synthesize_item(vars(item), config, library, tmp_path) == []
    rejects = {r["persona_id"]: r for r in read_rejects(tmp_path).values()}
    assert rejects["angry-alex"]["stage"] == "validate" and rejects["angry-alex"]["reason"].startswith("not_alternating")
    assert rejects["furious-frank"]["kind"] == "error" and rejects["furious-frank"]["attempts"] == 2
    assert "HTTP 500" in rejects["furious-frank"]["reason"]


def test_back_annotation_writes_prompts_and_rejects(chat_server, tmp_path):
    source = tmp_path / "mine.jsonl"
    lines = [{"id": "a", "turns": [{"speaker": "agent", "text": "Tea please."}, {"speaker": "user", "text": "Sure."}]},
             {"id": "b", "turns": [{"speaker": "agent", "text": "BROKEN"}]}]
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    summary = annotate_file(source, tmp_path / "out.jsonl", _llm(chat_server, max_retries=1))
    assert summary == {**summary, "input": 2, "annotated": 1, "rejected": 1}
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written[0]["system_prompt"] == "<system> You are a customer who wants tea. <system>"
    rejected = json.loads((tmp_path / "out.rejects.jsonl").read_text())
    assert rejected["id"] == "b" and "unusable reply" in rejected["reason"]
