"""An OpenAI-compatible chat-completions client (vLLM, gpt-oss-120b, ...) and the LLM dialogue backend.

Base URL and key come from the config (`data.dialogue.llm`) or the environment. Requests are
retried with exponential backoff on connection errors, 429 and 5xx answers and on replies that
are not the JSON asked for; at most `max_concurrency` requests per process are in flight.
"""

from __future__ import annotations

import json
import os
import re
import typing as tp

from plexray.data.config import LLMConfig
from plexray.data.dialogue.script import Dialogue, Speaker, Turn
from plexray.data.errors import LLMError
from plexray.data.personas import Persona, Scenario
from plexray.data.prompts import system_prompt
from plexray.openai_compat import post_json

BASE_URL_ENV = "PLEXRAY_LLM_BASE_URL"

def parse_json_reply(text: str) -> object:
    """The JSON object in a model's reply, tolerating ```json fences and prose around it."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = fenced.group(1) if fenced else text
    start, end = candidate.find("{"), candidate.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the reply")
    return json.loads(candidate[start:end + 1])


class ChatClient:
    def __init__(self, config: LLMConfig):
        base_url = config.base_url or os.environ.get(BASE_URL_ENV)
        if not base_url:
            raise LLMError(f"no LLM endpoint: set data.dialogue.llm.base_url or ${BASE_URL_ENV}")
        self.base_url = base_url.rstrip("/")
        self.config = config
        self.api_key = os.environ.get(config.api_key_env, "")

    def complete_json(self, messages: list[dict]) -> object:
        """Send a chat completion; returns the parsed JSON object of the answer."""
        body = {"model": self.config.model, "messages": messages, "temperature": self.config.temperature,
                "max_tokens": self.config.max_tokens, "response_format": {"type": "json_object"}}
        return post_json(self.base_url, "/chat/completions", body, self.api_key, self.config,
                         lambda reply: parse_json_reply(reply["choices"][0]["message"]["content"]), LLMError)


DIALOGUE_INSTRUCTIONS = (
    "Write a realistic spoken dialogue as JSON: {{\"turns\": [{{\"speaker\": \"agent\" or \"user\", "
    "\"text\": ...}}, ...]}}. The agent is the character described below and speaks first; the user is the "
    "{counterpart}. Between {min_turns} and {max_turns} turns, strictly alternating. The agent must show its "
    "speech patterns (fillers, interruptions, questions, technical terms) in every line. Spoken words only: "
    "no stage directions, no emoji."
)


GROUNDING_INSTRUCTIONS = (
    " The character's prompt ends with what the agent knows (numbered passages). The {counterpart} asks about "
    "those topics and the agent answers with those facts, keeping their names, numbers and prices exactly; "
    "the agent never invents facts beyond them."
)


class LLMBackend:
    """Dialogues from a chat-completions endpoint; the reply's shape is checked by validation."""

    def __init__(self, config: LLMConfig):
        self.client = ChatClient(config)

    def write(self, persona: Persona, scenario: Scenario, seed: int, min_turns: int, max_turns: int,
              first_speaker: Speaker, passages: tp.Sequence[str] = ()) -> Dialogue:
        instructions = DIALOGUE_INSTRUCTIONS.format(counterpart=scenario.counterpart, min_turns=min_turns,
                                                    max_turns=max_turns)
        if first_speaker == "user":
            instructions = instructions.replace("and speaks first", "and the user speaks first")
        character = system_prompt(persona, scenario, "detailed", passages)
        if passages:
            instructions += GROUNDING_INSTRUCTIONS.format(counterpart=scenario.counterpart)
        messages = [{"role": "system", "content": instructions},
                    {"role": "user", "content": f"{character}\nItems: {', '.join(scenario.items)}.\nVariation seed: {seed}."}]
        reply = self.client.complete_json(messages)
        turns = reply.get("turns") if isinstance(reply, dict) else None
        if not isinstance(turns, list):
            raise LLMError("reply has no 'turns' list")
        return Dialogue(tuple(Turn(str(t.get("speaker", "")), str(t.get("text", ""))) for t in turns
                              if isinstance(t, dict)))
