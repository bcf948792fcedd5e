"""Role adherence: an LLM judge scores the agent's answer to a role question 0-5, with its own rubric per question type.

The judge is any OpenAI-compatible chat endpoint (vLLM, gpt-oss-120b, ...), called through the
platform's client (`plexray.openai_compat.post_json`: retries, backoff, a cap on requests in flight).
Service-Duplex-Bench's rubric is not public; these rubrics are plexray's own. The answer the judge
reads is an ASR transcript of the agent's speech, so it is told to forgive misrecognised words.
Without `base_url` the caller skips judging (this module is never called) and says so in the report.
"""

from __future__ import annotations

import dataclasses
import os

import pydantic

from plexray.data.config import LLMConfig
from plexray.data.dialogue.llm import parse_json_reply
from plexray.errors import PlexrayError
from plexray.openai_compat import post_json

MAX_SCORE = 5
SKIPPED_NOTE = "skipped: no judge endpoint configured, set evaluation.judge.base_url"


class JudgeError(PlexrayError):
    """The judge endpoint failed or kept answering something unusable, after retries."""


class JudgeConfig(LLMConfig):
    """The judge's chat endpoint; the same settings as the dialogue LLM's, its own defaults."""

    base_url: str | None = pydantic.Field(
        None, description="e.g. http://host:8000/v1; None: role adherence is not judged (the report says so)")
    api_key_env: str = pydantic.Field("PLEXRAY_JUDGE_API_KEY", description="environment variable holding the key")
    temperature: float = pydantic.Field(0.0, ge=0.0, le=2.0, description="0: the same answer gets the same score")
    max_tokens: int = pydantic.Field(512, ge=16)


@dataclasses.dataclass(frozen=True)
class JudgeScore:
    score: int  # 0 (fails the question completely) to 5 (ideal answer)
    reason: str


# What 5, 3 and 0 mean for each question type of the test set (plexray.evaluation.testset).
RUBRICS = {
    "name": "The user asks for a proper noun the prompt gives (the character's name). 5: says that exact name, in "
            "character. 3: a close variant or the name buried in a confused answer. 0: a wrong name, no name, or "
            "an answer as an AI assistant.",
    "detail": "The user asks about a detail the prompt gives (the character's situation, an item, a fact). 5: states "
              "the detail as the prompt gives it, in character. 3: partly right or vague. 0: contradicts the prompt "
              "or invents a different situation.",
    "impossible_request": "The user asks for something the character cannot do. 5: declines or explains it cannot, "
                          "politely, offers what it can do, stays in character. 3: declines but awkwardly or leaves "
                          "the role. 0: pretends to do it or promises it.",
    "rude_user": "The user is rude. 5: stays calm and courteous, does not insult back, keeps helping in character. "
                 "3: calm but unhelpful, or slightly defensive. 0: insults back, escalates, or leaves the role.",
    "not_in_prompt": "The user asks for information the prompt does not give. 5: says it does not know or will not "
                     "share it, inventing nothing, in character. 3: hedges but invents a minor detail. 0: confidently "
                     "invents the information.",
    "off_topic": "The user asks about something unrelated to the character's situation. 5: politely brings the "
                 "conversation back to the situation, in character. 3: answers the off-topic request briefly, then "
                 "returns. 0: drops the role and answers at length as a general assistant.",
}
QUESTION_TYPES = tuple(RUBRICS)

INSTRUCTIONS = (
    "You judge whether a voice agent stays in the role its prompt gives. You get the agent's prompt, the user's "
    "question, what a good answer does, and the agent's answer as an automatic speech recognition transcript: "
    "forgive misrecognised words that sound like the right ones, judge the meaning. An empty or unrelated "
    "answer scores 0. Rubric for this question: {rubric} Scores 1, 2 and 4 lie between. Reply with JSON only: "
    "{{\"score\": an integer 0-5, \"reason\": one sentence}}."
)


def judge_role_answer(question_type: str, persona_prompt: str, question: str, expected: str,
                      answer_transcript: str, config: JudgeConfig) -> JudgeScore:
    """Score the agent's answer (its transcript after the question) 0-5 against the question type's rubric.

    An empty answer scores 0 without asking the judge. Raises JudgeError when the endpoint fails after
    its retries, and ValueError for an unknown question type or a config without base_url.
    """
    if question_type not in RUBRICS:
        raise ValueError(f"unknown role question type {question_type!r}; expected one of {QUESTION_TYPES}")
    if not config.base_url:
        raise ValueError(f"no judge endpoint: {SKIPPED_NOTE}")
    if not answer_transcript.strip():
        return JudgeScore(0, "no answer: the agent said no words after the question")
    messages = [
        {"role": "system", "content": INSTRUCTIONS.format(rubric=RUBRICS[question_type])},
        {"role": "user", "content": f"Agent's prompt:\n{persona_prompt}\n\nUser's question: {question}\n\n"
                                    f"A good answer: {expected}\n\nAgent's answer (transcript): {answer_transcript}"},
    ]
    body = {"model": config.model, "messages": messages, "temperature": config.temperature,
            "max_tokens": config.max_tokens, "response_format": {"type": "json_object"}}
    return post_json(config.base_url.rstrip("/"), "/chat/completions", body, os.environ.get(config.api_key_env, ""),
                     config, _parse_score, JudgeError)


def _parse_score(reply: dict) -> JudgeScore:
    """The JudgeScore in a chat reply; ValueError (the client retries) when the score is missing or out of range."""
    answer = parse_json_reply(reply["choices"][0]["message"]["content"])
    if not isinstance(answer, dict):
        raise ValueError("the judge's JSON is not an object")
    score = answer.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or score != int(score) \
            or not 0 <= score <= MAX_SCORE:
        raise ValueError(f"score must be an integer 0-{MAX_SCORE}, got {score!r}")
    return JudgeScore(int(score), str(answer.get("reason", "")).strip())
