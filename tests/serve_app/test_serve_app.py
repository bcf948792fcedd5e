"""The Serve app for real: Ray Serve on loopback, the demo model, real WebSocket clients of both protocols.

Tests run in file order on one fleet (module fixture): conversations first, then filling the fleet
(autoscaling 1 -> 2 replicas, then the busy answer), the metrics they left, then killing a replica.
"""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from serve_helpers import API_KEY, GUARD_S, LIMITED_KEY, SESSIONS_PER_REPLICA, replica_states, run, status, wait_until
from plexray.serve.app.clients import ChatClient, Refused, VoiceClient, drain, events_until, frames_of

pytestmark = pytest.mark.timeout(240)


def test_status_and_health_are_served_by_the_ops_app(serve_fleet):
    body = status(serve_fleet)
    assert {adapter["name"] for adapter in body["adapters"]} == {"assistant", "barista"}
    assert body["sessions_per_replica"] == SESSIONS_PER_REPLICA
    wait_until(lambda: status(serve_fleet)["replicas"], 30, "the first replica's report")
    assert httpx.get(serve_fleet["http"] + "/voice/healthz").json() == {"status": "ok"}
    ready = httpx.get(serve_fleet["http"] + "/voice/readyz")
    assert ready.status_code == 200 and ready.json()["capacity"] == SESSIONS_PER_REPLICA


def test_binary_protocol_conversation_with_opus_speech(serve_fleet, speech):
    async def conversation():
        async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY,
                                      text_prompt="You take coffee orders.", voice_prompt="NATM0.pt",
                                      text_temperature=1.0, text_topk=500, audio_seed=7) as chat:
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            for frame in frames_of(speech):
                await chat.send_pcm(frame)
            events = await events_until(chat, lambda kind, _: kind == "text")
            events += await events_until(chat, lambda kind, pcm: kind == "audio" and pcm.size > 0)
            await chat.send_raw(bytes([0x06]))  # ping
            events += await events_until(chat, lambda kind, _: kind == "ping")
            return events

    events = run(conversation())
    audio = np.concatenate([value for kind, value in events if kind == "audio"])
    assert audio.size > 0 and np.isfinite(audio).all()
    assert any(kind == "text" and value for kind, value in events)


def test_binary_protocol_malformed_messages_get_errors_and_the_session_survives(serve_fleet, speech):
    async def conversation():
        async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as chat:
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            errors = []
            for bad in (bytes([0x09, 1, 2]), bytes([0x01]) + b"definitely not ogg", b"",
                        bytes([0x01]) + bytes(70_000), "a text frame", bytes([0x03, 0x7F])):
                await chat.send_raw(bad)
                errors.append(await events_until(chat, lambda kind, _: kind == "error"))
            for control in (0x02, 0x00, 0x01):  # pause, start, end of turn: acted on, never answered
                await chat.send_raw(bytes([0x03, control]))
            await chat.send_raw(b'\x04{"client": "test"}')
            for frame in frames_of(speech[:24000]):
                await chat.send_pcm(frame)
            after = await events_until(chat, lambda kind, pcm: kind == "audio" and pcm.size > 0)
            await chat.send_raw(bytes([0x03, 0x03]))  # restart: the server ends the session
            with contextlib.suppress(ConnectionClosed):
                while True:
                    after.append(await chat.next_event())
            return errors, after, chat.ws.close_reason

    errors, after, close_reason = run(conversation())
    messages = [events[-1][1] for events in errors]
    assert "unknown message kind 0x09" in messages[0]
    assert "Ogg pages" in messages[1]
    assert "empty message" in messages[2]
    assert "exceeds the limit" in messages[3]
    assert "binary messages" in messages[4]
    assert "unknown action" in messages[5]
    assert any(kind == "audio" and pcm.size > 0 for kind, pcm in after)
    # NVIDIA's client parses every 0x04 as server info (and logs an error for any other): none is sent.
    assert not [kind for events in (*errors, after) for kind, _ in events if kind == "metadata"]
    assert close_reason == "client_end"


# What NVIDIA's web client sends (see test_client_settings.py): its defaults, and seeds -1 with the
# lowest end of every control. `api_key` is how a browser client presents a key.
NVIDIA_CLIENT_QUERIES = [
    "text_temperature=0.7&text_topk=25&audio_temperature=0.8&audio_topk=250&pad_mult=0&text_seed=482913"
    "&audio_seed=77&repetition_penalty_context=64&repetition_penalty=1&text_prompt=You+are+a+wise+and+"
    "friendly+teacher.+Answer+questions+or+provide+advice+in+a+clear+and+engaging+way.&voice_prompt=NATF0.pt",
    "text_temperature=0.2&text_topk=10&audio_temperature=0.2&audio_topk=10&pad_mult=-4&text_seed=-1"
    "&audio_seed=-1&repetition_penalty_context=0&repetition_penalty=1&text_prompt=&voice_prompt=NATM0.pt",
    "text_temperature=1.2&text_topk=500&audio_temperature=1.2&audio_topk=500&pad_mult=4&text_seed=1000000"
    "&audio_seed=1000000&repetition_penalty_context=200&repetition_penalty=2&text_prompt=You+enjoy+having+a+"
    "good+conversation.&voice_prompt=NATF0.pt",
]


@pytest.mark.parametrize("query", NVIDIA_CLIENT_QUERIES)
def test_nvidia_web_client_query_strings_are_served(serve_fleet, speech, query):
    async def conversation():
        url = f"{serve_fleet['ws']}/api/chat?{query}&api_key={API_KEY}"
        async with ChatClient.connect(url) as chat:
            await asyncio.wait_for(chat.handshake(), GUARD_S)
            for frame in frames_of(speech[:24000]):
                await chat.send_pcm(frame)
            return await events_until(chat, lambda kind, pcm: kind == "audio" and pcm.size > 0)

    events = run(conversation())
    assert {kind for kind, _ in events} <= {"audio", "text"}


def test_an_out_of_range_setting_gets_a_0x05_error_naming_it(serve_fleet):
    async def attempt():
        url = f"{serve_fleet['ws']}/api/chat?{NVIDIA_CLIENT_QUERIES[0].replace('text_topk=25', 'text_topk=40000')}"
        with pytest.raises(Refused) as refused:
            async with ChatClient.connect(url + f"&api_key={API_KEY}") as chat:
                await asyncio.wait_for(chat.handshake(), GUARD_S)
        return refused.value

    refused = run(attempt())
    assert refused.code == 1008 and "text_topk" in refused.message and "32000" in refused.message


def test_json_protocol_conversation_and_malformed_messages(serve_fleet, speech):
    async def conversation():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/barista", api_key=API_KEY) as voice:
            connected = await asyncio.wait_for(voice.handshake(), GUARD_S)
            for frame in frames_of(speech):
                await voice.send_pcm(frame)
            events = await events_until(voice, lambda kind, _: kind == "transcription")
            events += await events_until(voice, lambda kind, _: kind == "audio_chunk")
            replies = []
            for message in ({"type": "ping"}, "{not json", {"type": "shout"}, {"type": "audio_chunk", "data": "@@@"},
                            {"type": "audio_chunk", "data": "AAA="}, {"type": "audio_chunk", "data": "A" * 90_000},
                            {"type": "interrupt"}):
                await voice.send(message)
                replies.append(await events_until(voice, lambda kind, _: kind in ("pong", "error", "interrupted")))
            await voice.send_pcm(speech[:1920])
            after = await events_until(voice, lambda kind, _: kind == "audio_chunk")
            await voice.send({"type": "end"})
            ended = await events_until(voice, lambda kind, _: kind == "ended")
            with contextlib.suppress(Exception):
                await voice.ws.wait_closed()
            return connected, events, replies, after, ended, voice.close_code

    connected, events, replies, after, ended, close_code = run(conversation())
    assert connected["adapter"] == "barista" and connected["voice"] == "NATM0"
    assert connected["capabilities"]["full_duplex"] and connected["sample_rate"] == 24000
    chunk = next(value for kind, value in events if kind == "audio_chunk")
    assert chunk["pcm"].shape == (1920,) and chunk["format"] == "pcm"
    last = [r[-1] for r in replies]
    assert last[0][0] == "pong"
    assert last[1][0] == "error" and "not valid JSON" in last[1][1]["message"]
    assert last[2][0] == "error" and "unknown message type 'shout'" in last[2][1]["message"]
    assert last[3][0] == "error" and "base64" in last[3][1]["message"]
    assert last[4][0] == "error" and "whole number" in last[4][1]["message"]
    assert last[5][0] == "error" and "exceeds the limit" in last[5][1]["message"]
    assert last[6] == ("interrupted", {"type": "interrupted", "reason": "user_request"})
    assert after[-1][1]["pcm"].size == 1920
    assert ended[-1][1]["reason"] == "client_end" and close_code == 1000


def test_a_client_that_keeps_sending_garbage_is_closed_with_1007(serve_fleet):
    from plexray.serve.app.conversation import ConversationLimits

    async def conversation():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as voice:
            await asyncio.wait_for(voice.handshake(), GUARD_S)
            for _ in range(ConversationLimits.max_protocol_errors):
                await voice.send("{not json")
            events = await events_until(voice, lambda kind, _: kind == "ended")
            with contextlib.suppress(Exception):
                await voice.ws.wait_closed()
            return events, voice.close_code

    events, close_code = run(conversation())
    errors = [message for kind, message in events if kind == "error"]
    assert len(errors) == ConversationLimits.max_protocol_errors + 1
    assert "invalid messages: closing" in errors[-1]["message"]
    assert events[-1][1]["reason"] == "protocol_errors" and close_code == 1007


def test_wrong_or_missing_api_key_and_key_session_limit_are_refused(serve_fleet):
    async def attempt(**kwargs):
        try:
            async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", **kwargs) as voice:
                await asyncio.wait_for(voice.handshake(), GUARD_S)
        except Refused as refused:
            return refused
        return None

    async def key_limit():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=LIMITED_KEY) as first:
            await asyncio.wait_for(first.handshake(), GUARD_S)
            return await attempt(api_key=LIMITED_KEY)

    wrong = run(attempt(api_key="not-the-key"))
    missing = run(attempt())
    over_limit = run(key_limit())
    assert wrong.code == 1008 and wrong.message == "invalid API key"
    assert missing.code == 1008 and "API key is required" in missing.message
    assert over_limit.code == 1008 and "already holds 1 live sessions" in over_limit.message
    bad_setting = run(attempt(api_key=API_KEY, text_topk=0))
    assert bad_setting.code == 1008 and "text_topk" in bad_setting.message


def test_autoscaling_to_two_replicas_then_cap_plus_one_gets_a_clear_busy_answer(serve_fleet):
    async def scenario():
        held = []  # (client, its drain task, its context)
        try:
            async def open_one():
                context = ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY)
                chat = await context.__aenter__()
                await asyncio.wait_for(chat.handshake(), GUARD_S)
                held.append((chat, asyncio.create_task(drain(chat)), context))

            for _ in range(SESSIONS_PER_REPLICA):  # fill the first replica: load 2 > target 1
                await open_one()
            await asyncio.to_thread(wait_until, lambda: replica_states().get("RUNNING") == 2, 120,
                                    "autoscaling to 2 running replicas")
            await asyncio.to_thread(wait_until, lambda: len(status(serve_fleet)["replicas"]) == 2, 30,
                                    "the second replica's report")
            for _ in range(SESSIONS_PER_REPLICA):  # fill the second replica
                await open_one()
            async def extra_caller():
                with pytest.raises(Refused) as busy:
                    async with ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY) as extra:
                        await asyncio.wait_for(extra.handshake(), GUARD_S)
                return busy.value

            # A burst of callers beyond the cap, more than the fleet's spare 'reject' slots: all are
            # told 'busy' (none admitted, none a bare 500, none left hanging).
            refusals = await asyncio.gather(*(extra_caller() for _ in range(5)))
            return refusals, status(serve_fleet)
        finally:
            for chat, task, context in held:
                await context.__aexit__(None, None, None)
                task.cancel()

    refusals, fleet = run(scenario())
    for busy in refusals:
        assert busy.code == 1013 and busy.reason.startswith("busy")
        assert "retry in" in busy.message
    assert fleet["live_sessions"] == 2 * SESSIONS_PER_REPLICA
    assert [replica["live_sessions"] for replica in fleet["replicas"]] == [SESSIONS_PER_REPLICA] * 2
    ready = httpx.get(serve_fleet["http"] + "/voice/readyz")
    assert ready.status_code in (200, 503)  # answered at once even while the session replicas are full


def test_serving_metrics_reach_rays_prometheus_endpoint(serve_fleet, ray_cluster):
    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port

    def rejections_exported() -> str:
        """The exposition text once the refusals of the tests above show up (export is periodic)."""
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        rejected = [line for line in text.splitlines() if line.startswith("ray_plexray_sessions_rejected")]
        reasons = {reason for reason in ("busy", "unauthorized", "key_limit")
                   if any(f'reason="{reason}"' in line for line in rejected)}
        return text if len(reasons) == 3 else ""

    text = wait_until(rejections_exported, 120, "busy/unauthorized/key_limit rejections on Ray's Prometheus endpoint",
                      poll_s=2)
    for name in ("ray_plexray_live_sessions", "ray_plexray_session_capacity", "ray_plexray_tick_ms_p99",
                 "ray_plexray_protocol_errors", "ray_plexray_sessions_opened"):
        assert name in text


def test_a_killed_replica_closes_its_clients_and_new_sessions_go_elsewhere(serve_fleet, ray_cluster):
    import ray

    wait_until(lambda: status(serve_fleet)["live_sessions"] == 0, 30, "the previous test's sessions to end")

    async def scenario():
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as victim:
            await asyncio.wait_for(victim.handshake(), GUARD_S)
            holder = await asyncio.to_thread(
                wait_until, lambda: next((r["replica"] for r in status(serve_fleet)["replicas"]
                                          if r["live_sessions"] == 1), None), 30, "the session in /voice/status")
            ray.kill(ray.get_actor(f"SERVE_REPLICA::plexray#PersonaPlexReplica#{holder}", namespace="serve"),
                     no_restart=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drain(victim), GUARD_S)
            victim_code = victim.close_code
        async with VoiceClient.connect(serve_fleet["ws"] + "/ws/voice/assistant", api_key=API_KEY) as survivor:
            await asyncio.wait_for(survivor.handshake(), GUARD_S)
            await survivor.send_pcm(np.zeros(1920, np.float32))
            await events_until(survivor, lambda kind, _: kind == "audio_chunk")
            # The dead replica's session is freed once its reports stop; the new one lives elsewhere.
            fleet = await asyncio.to_thread(
                wait_until, lambda: (lambda f: f if holder not in {r["replica"] for r in f["replicas"]} else None)(
                    status(serve_fleet)), 30, "the ledger to drop the killed replica")
        return victim_code, fleet

    victim_code, fleet = run(scenario())
    assert victim_code is not None and victim_code != 1000  # closed abnormally, not left hanging
    assert fleet["live_sessions"] == 1 and fleet["replicas"]

