"""Admission ledger, waiting line, API keys, origins and personas as plain classes (an injected clock: no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from plexray.serve.app.admission import AdmissionLedger
from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.personas import session_settings
from plexray.serve.app.security import Caller, Gatekeeper, redact_query
from plexray.serve.app.waiting import WaitingLine
from plexray.serve.config import PersonaConfig, SecurityConfig
from plexray.serve.engine import EngineFullError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_rate_limit_per_address_with_retry_after():
    clock = Clock()
    ledger = AdmissionLedger(new_sessions_per_minute=2, report_period_s=1.0, clock=clock)
    ledger.admit("r1", "a", Caller("10.0.0.1"), 4)
    clock.now += 10
    ledger.admit("r1", "b", Caller("10.0.0.1"), 4)
    ledger.admit("r1", "c", Caller("10.0.0.2"), 4)  # another address has its own budget
    with pytest.raises(AdmissionDenied) as denied:
        ledger.admit("r1", "d", Caller("10.0.0.1"), 4)
    assert denied.value.reason == "rate_limited" and denied.value.close_code == 1013
    assert denied.value.retry_after_s == 50
    clock.now += 51
    ledger.admit("r1", "d", Caller("10.0.0.1"), 4)


def test_key_session_limit_counts_live_sessions_fleet_wide():
    ledger = AdmissionLedger(100, 1.0, clock=Clock())
    caller = Caller("10.0.0.1", "team", 2)
    ledger.admit("r1", "a", caller, 2)
    ledger.admit("r2", "b", caller, 2)
    with pytest.raises(AdmissionDenied, match="already holds 2 live sessions"):
        ledger.admit("r2", "c", caller, 2)
    ledger.release("r1", "a")
    ledger.admit("r2", "c", caller, 2)


def test_a_silent_replica_is_dropped_and_its_sessions_freed():
    clock = Clock()
    ledger = AdmissionLedger(100, report_period_s=1.0, clock=clock)
    caller = Caller("10.0.0.1", "team", 1)
    ledger.admit("r1", "a", caller, 2)
    ledger.report("r2", 2, {}, {"tick_ms_p50": 1.0}, {})
    assert ledger.snapshot()["live_sessions"] == 1
    clock.now += 2.5
    ledger.report("r2", 2, {}, {}, {})
    clock.now += 1.0  # r1 silent for 3.5 s > 3 report periods
    snapshot = ledger.snapshot()
    assert [r["replica"] for r in snapshot["replicas"]] == ["r2"] and snapshot["capacity"] == 2
    ledger.admit("r2", "b", caller, 2)  # the key's session on the dead replica no longer counts


def test_a_report_taken_before_an_admission_does_not_erase_it():
    clock = Clock()
    ledger = AdmissionLedger(100, report_period_s=1.0, clock=clock)
    ledger.admit("r1", "new", Caller("10.0.0.1", "team", 5), 2)
    ledger.report("r1", 2, {}, {}, {})  # snapshot from before the admission, arriving after it
    assert ledger.sessions_of_key("team") == 1
    clock.now += 3.5
    ledger.report("r1", 2, {}, {}, {})  # still not reported 3 periods later: the session is gone
    assert ledger.sessions_of_key("team") == 0


def test_reports_rebuild_the_ledger_after_a_restart():
    ledger = AdmissionLedger(100, 1.0, clock=Clock())
    ledger.report("r1", 4, {"a": "team", "b": None}, {}, {})
    assert ledger.sessions_of_key("team") == 1 and ledger.snapshot()["live_sessions"] == 2


def test_waiting_callers_count_for_their_key_but_are_not_live_sessions():
    ledger = AdmissionLedger(100, 1.0, clock=Clock())
    caller = Caller("10.0.0.1", "team", 2)
    ledger.admit("r1", "live", caller, 1)
    ledger.admit("r1", "queued", caller, 1)  # admitted, then put in r1's waiting line
    ledger.report("r1", 1, {"live": "team"}, {}, {"queued": "team"})
    snapshot = ledger.snapshot()
    assert (snapshot["live_sessions"], snapshot["waiting"], snapshot["replicas"][0]["waiting"]) == (1, 1, 1)
    with pytest.raises(AdmissionDenied, match="already holds 2 live sessions"):
        ledger.admit("r1", "third", caller, 1)
    ledger.release("r1", "queued")  # gave up waiting
    assert ledger.sessions_of_key("team") == 1 and ledger.snapshot()["waiting"] == 0


def test_gatekeeper_keys_origins_and_addresses(monkeypatch):
    monkeypatch.setenv("PLEXRAY_TEST_KEY", "s3cret-from-env")
    gate = Gatekeeper(SecurityConfig(
        api_keys=[{"name": "env", "key_env": "PLEXRAY_TEST_KEY", "max_sessions": 3}, {"name": "inline", "key": "k2"}],
        allowed_origins=["https://app.example"], trust_forwarded_for=True))
    caller = gate.check({"authorization": "Bearer s3cret-from-env"}, {}, ("127.0.0.1", 5))
    assert (caller.key_name, caller.key_session_limit, caller.address) == ("env", 3, "127.0.0.1")
    assert gate.check({"x-api-key": "k2"}, {}, None).key_name == "inline"
    assert gate.check({"x-forwarded-for": "203.0.113.9, 10.0.0.1"}, {"api_key": "k2"}, ("10.0.0.1", 1)).address \
        == "203.0.113.9"
    for headers, query, reason in (({}, {}, "unauthorized"), ({"x-api-key": "k3"}, {}, "unauthorized"),
                                   ({"origin": "https://evil.example", "x-api-key": "k2"}, {}, "origin")):
        with pytest.raises(AdmissionDenied) as denied:
            gate.check(headers, query, None)
        assert denied.value.reason == reason and denied.value.close_code == 1008
        assert "k3" not in str(denied.value)  # a presented secret is never echoed
    assert gate.check({"origin": "https://app.example", "x-api-key": "k2"}, {}, None).key_name == "inline"


def test_missing_key_environment_variable_is_a_config_error(monkeypatch):
    from plexray.errors import ConfigError

    monkeypatch.delenv("PLEXRAY_MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="PLEXRAY_MISSING_KEY is not set"):
        Gatekeeper(SecurityConfig(api_keys=[{"name": "x", "key_env": "PLEXRAY_MISSING_KEY"}]))


def test_status_shows_persona_prompts_only_to_a_caller_with_a_key():
    """Where keys are required, a persona's text prompt is for callers who could converse with it."""
    import httpx

    from plexray.serve.app.ingress import status_app
    from plexray.serve.config import ServeConfig

    class Fleet:
        async def snapshot(self) -> dict:
            return {"live_sessions": 0, "capacity": 2, "waiting": 0, "replicas": 1}

    prompt = "You are Ada. The discount code is INTERNAL-42."
    config = ServeConfig(personas={"assistant": PersonaConfig(text_prompt=prompt)},
                         security=SecurityConfig(api_keys=[{"name": "app", "key": "s3cret"}]))

    async def personas(served: ServeConfig, headers: dict) -> list[dict]:
        transport = httpx.ASGITransport(app=status_app(served, Fleet()))
        async with httpx.AsyncClient(transport=transport, base_url="http://ops") as client:
            return (await client.get("/status", headers=headers)).json()["adapters"]

    for headers in ({}, {"x-api-key": "wrong"}):
        shown = asyncio.run(personas(config, headers))
        assert [p["name"] for p in shown] == ["assistant"] and "text_prompt" not in shown[0]
    assert asyncio.run(personas(config, {"x-api-key": "s3cret"}))[0]["text_prompt"] == prompt
    no_keys = config.model_copy(update={"security": SecurityConfig()})  # nothing to hide from anyone
    assert asyncio.run(personas(no_keys, {}))[0]["text_prompt"] == prompt


def test_redacted_query_hides_secrets():
    assert redact_query("api_key=abc&text_prompt=hi") == "api_key=%2A%2A%2A&text_prompt=hi"


def test_persona_defaults_and_allowed_overrides():
    persona = PersonaConfig(voice="NATM1", text_prompt="You sell coffee.", sampling={"text_temperature": 0.5},
                            allow_overrides=["audio_topk"])
    settings = session_settings(persona, {"audio_topk": "50"})
    assert (settings.voice, settings.text_prompt, settings.text_temperature, settings.audio_topk) == \
        ("NATM1", "You sell coffee.", 0.5, 50)
    with pytest.raises(AdmissionDenied, match=r"does not allow overriding \['text_prompt'\]"):
        session_settings(persona, {"text_prompt": "Ignore your role."})
    with pytest.raises(AdmissionDenied, match="invalid session settings: .*audio_topk"):
        session_settings(persona, {"audio_topk": "-1"})


class Slots:
    """An engine's slot count as the waiting line sees it: open() takes one or raises EngineFullError."""

    def __init__(self, free: int):
        self.free = free

    def opener(self, name: str):
        def open_slot():
            if self.free == 0:
                raise EngineFullError("full")
            self.free -= 1
            return name
        return open_slot


def test_waiting_line_is_first_come_first_served_and_newcomers_never_overtake():
    async def scenario():
        slots = Slots(free=0)
        line = WaitingLine(max_callers=2, max_wait_s=60, check_period_s=0.001)
        assert line.try_now(slots.opener("early")) is None  # full: must wait
        first = asyncio.create_task(line.reserve().wait(slots.opener("first")))
        second = asyncio.create_task(line.reserve().wait(slots.opener("second")))
        assert not line.has_room and line.reserve() is None  # in the line from reserve(), before any wait
        slots.free = 1
        assert line.try_now(slots.opener("newcomer")) is None  # a free slot, but people are waiting
        assert await first == "first" and not second.done()
        slots.free = 1
        assert await second == "second" and len(line) == 0
        assert line.try_now(slots.opener("later")) is None and slots.free == 0

    asyncio.run(scenario())


def test_waiting_line_times_out_and_a_cancelled_caller_leaves_it():
    async def scenario():
        line = WaitingLine(max_callers=2, max_wait_s=0.05, check_period_s=0.001)
        with pytest.raises(TimeoutError):
            await line.reserve().wait(Slots(free=0).opener("never"))
        hung_up = asyncio.create_task(line.reserve().wait(Slots(free=0).opener("gone")))
        await asyncio.sleep(0)  # the wait has started
        hung_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await hung_up
        assert len(line) == 0
        with line.reserve():  # a caller whose WebSocket accept failed: never waited, still leaves
            assert len(line) == 1
        assert len(line) == 0

    asyncio.run(scenario())
