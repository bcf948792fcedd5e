"""The role-adherence judge against a local OpenAI-compatible server (tests/openai_stub.py)."""

import pytest

from plexray.evaluation.judge import QUESTION_TYPES, JudgeConfig, JudgeError, JudgeScore, judge_role_answer

from openai_stub import OpenAICompatibleServer

PROMPT = "<system> You are Alex, a barista at Bean There cafe. <system>"


def _chat(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def _config(server, **fields) -> JudgeConfig:
    return JudgeConfig(base_url=server.base_url, backoff_s=0.0, **fields)


def test_the_judge_gets_the_rubric_and_its_score_comes_back(monkeypatch):
    monkeypatch.setenv("PLEXRAY_JUDGE_API_KEY", "secret")
    requests = []

    def answer(path, body):
        requests.append((path, body))
        return 200, _chat('Sure: ```json\n{"score": 4, "reason": "Says the name Alex, slightly hesitant."}\n```')

    with OpenAICompatibleServer(answer) as server:
        score = judge_role_answer("name", PROMPT, "Sorry, what was your name again?", "Says the name Alex.",
                                  "uh my name is alex", _config(server, model="judge-model"))
    assert score == JudgeScore(4, "Says the name Alex, slightly hesitant.")
    (path, body), = requests
    assert path == "/v1/chat/completions" and body["model"] == "judge-model" and body["temperature"] == 0.0
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    assert "proper noun" in system  # the name question's rubric, not another's
    assert PROMPT in user and "uh my name is alex" in user and "Says the name Alex." in user


def test_each_question_type_has_its_own_rubric():
    systems = {}

    def answer(path, body):
        systems[body["messages"][0]["content"]] = True
        return 200, _chat('{"score": 5, "reason": "ok"}')

    with OpenAICompatibleServer(answer) as server:
        for question_type in QUESTION_TYPES:
            judge_role_answer(question_type, PROMPT, "q", "e", "an answer", _config(server))
    assert len(systems) == len(QUESTION_TYPES) == 6


def test_an_out_of_range_score_is_retried_then_refused():
    calls = []

    def answer(path, body):
        calls.append(1)
        return 200, _chat('{"score": 7, "reason": "very good"}')

    with OpenAICompatibleServer(answer) as server:
        with pytest.raises(JudgeError, match="score must be an integer 0-5, got 7"):
            judge_role_answer("detail", PROMPT, "q", "e", "an answer", _config(server, max_retries=2))
    assert len(calls) == 3


def test_an_empty_answer_scores_zero_without_a_call():
    def answer(path, body):
        raise AssertionError("the judge was called")

    with OpenAICompatibleServer(answer) as server:
        assert judge_role_answer("off_topic", PROMPT, "q", "e", "  ", _config(server)).score == 0


def test_unknown_question_type_and_missing_endpoint_are_named():
    with pytest.raises(ValueError, match="unknown role question type 'weather'"):
        judge_role_answer("weather", PROMPT, "q", "e", "a", JudgeConfig(base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(ValueError, match="set evaluation.judge.base_url"):
        judge_role_answer("name", PROMPT, "q", "e", "a", JudgeConfig())
