"""Helpers shared by the serve-app tests: the fleet's config overrides, ports, polling the live system.

Small caps so that a handful of clients fill the fleet: 2 sessions per replica, 1 to 2 replicas,
autoscaling target 1 ongoing session per replica (utilisation 0.5), no downscaling during tests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx


REPO_ROOT = Path(__file__).resolve().parents[2]
SESSIONS_PER_REPLICA = 2
API_KEY = "test-key-0123456789"
LIMITED_KEY = "limited-key-0123456789"

OVERRIDES = [
    f"serve.sessions_per_replica={SESSIONS_PER_REPLICA}",
    "serve.num_cpus=0.5",
    "serve.autoscaling={min_replicas: 1, max_replicas: 2, target_utilisation: 0.5, upscale_delay_s: 0, "
    "downscale_delay_s: 3600}",
    "serve.engine={max_session_s: 60, idle_timeout_s: 60}",
    "serve.drain_margin_s=5",
    "serve.waiting_line={max_callers_per_replica: 0}",  # 'busy' at once; test_waiting_line*.py turn it on
    "serve.status_report_s=0.5",
    f"serve.security={{api_keys: [{{name: test, key: {API_KEY}}}, {{name: limited, key: {LIMITED_KEY}, "
    "max_sessions: 1}], max_message_bytes: 65536, new_sessions_per_minute: 1000}",
    "serve.personas={assistant: {voice: NATF0, text_prompt: 'You are a helpful assistant.', "
    "allow_overrides: [text_prompt, voice, text_temperature, text_topk, audio_temperature, audio_topk, "
    "text_seed, audio_seed, repetition_penalty, repetition_penalty_context, pad_mult]}, "
    "barista: {voice: NATM0, text_prompt: 'You sell coffee.', sampling: {text_temperature: 0.5}}}",
]


GUARD_S = 60  # failure guard for a single await on the server (never a timing assertion)


def run(coroutine):
    """Run a test's client scenario, failing (not hanging) if the server never answers."""
    async def guarded():
        return await asyncio.wait_for(coroutine, 180)

    return asyncio.run(guarded())


def status(fleet) -> dict:
    return httpx.get(fleet["http"] + "/voice/status", timeout=10).json()


def replica_states() -> dict:
    """Serve's count of session replicas by state (RUNNING, STARTING, STOPPING, ...)."""
    from ray import serve

    return serve.status().applications["plexray"].deployments["PersonaPlexReplica"].replica_states


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.25):
    """Poll a condition of the live system (Serve's state changes asynchronously); fail naming it."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(poll_s)


async def hold_a_session(serve_fleet, held: list) -> None:
    """Open a conversation on /api/chat and keep it (its output drained) until `let_go(held)`."""
    from plexray.serve.app.clients import ChatClient, drain

    context = ChatClient.connect(serve_fleet["ws"] + "/api/chat", api_key=API_KEY)
    chat = await context.__aenter__()
    await asyncio.wait_for(chat.handshake(), GUARD_S)
    held.append((context, asyncio.create_task(drain(chat))))


async def let_go(held: list) -> None:
    for context, draining in held:
        await context.__aexit__(None, None, None)
        draining.cancel()
    held.clear()
