"""The attack suite, small (CI): every category of malformed input against a live fleet while a good
session talks, then a burst of extra callers on the full fleet. Outcomes and counts only: the times
it measures are printed (pytest -s), not asserted; bench/attack.py is the full run.
"""

from __future__ import annotations

import asyncio
import json

import attacks
from ghost_relay import GhostRelay
from serve_helpers import API_KEY, SESSIONS_PER_REPLICA, status, wait_until

GUARD_S = 600  # failure guard for the whole run (never a timing assertion)
BURST_CALLERS = 12


def test_malformed_input_is_answered_and_breaks_nothing(attack_fleet):
    logs = attacks.LogWatch(attacks.serve_log_dir())
    replicas_before = attacks.session_replica_actors()
    logs.start()

    figures = asyncio.run(asyncio.wait_for(attacks.attack(
        attack_fleet, API_KEY, scale=1, burst_callers=BURST_CALLERS, capacity=SESSIONS_PER_REPLICA,
        max_message_bytes=attacks.MAX_MESSAGE_BYTES, per_category=5), GUARD_S))
    figures["logs"] = logs.figures()
    figures["replica_restarts"] = len(replicas_before - attacks.session_replica_actors())
    print(json.dumps(figures, indent=1))

    assert replicas_before and figures["replica_restarts"] == 0
    assert figures["silent"] == 0, "some bad inputs got no answer"
    for category, counts in figures["categories"].items():
        assert "accepted" not in counts["outcomes"], f"{category}: a bad request opened a conversation"
    assert figures["logs"]["replica_log_files"], "no replica log was read"
    assert figures["logs"]["tracebacks"]["count"] == 0 and figures["logs"]["engines_stopped"] == 0
    good = figures["good_session"]
    assert good["ended_early"] is None and good["agent_frames"] > 0
    assert figures["burst"]["busy"] == BURST_CALLERS
    flood = figures["report_flood"]  # client 0x05 messages past their rate: not logged, ended as protocol errors
    assert flood["close_code"] == 1007 and flood["replica_log_bytes"] < 10_000


def test_the_next_attack_waits_for_the_slot_of_the_conversation_just_hung_up(attack_fleet):
    """The attacks hang up and call again at once on a fleet with no waiting line. The replica hears of a
    hang-up after its caller has gone; here (GhostRelay) only after it has answered the next call."""
    async def scenario():
        held = await attacks.hold_the_fleet(attack_fleet, API_KEY, SESSIONS_PER_REPLICA - 1)
        try:
            async with GhostRelay(attack_fleet) as relay:
                hung_up = await attacks.open_conversation(relay.urls, "chat", API_KEY)  # the fleet's last slot
                relay.hang_up()
                await hung_up.wait_closed()
                # Raises if refused: without waiting for a free slot it would meet the ghost and be told 'busy'.
                next_call = await attacks.open_conversation(relay.urls, "chat", API_KEY)
                await next_call.close()
        finally:
            await attacks.let_go(held)

    asyncio.run(asyncio.wait_for(scenario(), GUARD_S))


def test_normal_hang_ups_leave_no_error_in_the_serve_logs(attack_fleet):
    """Callers that hang up mid-conversation (their agent frames still streaming) are no fault: the Serve
    logs, the proxy's included, gain no ERROR line and no traceback (issue 23 item 4)."""
    logs = attacks.LogWatch(attacks.serve_log_dir())
    logs.start()

    async def scenario():
        for route in ("chat", "voice", "chat", "voice"):
            ws = await attacks.open_conversation(attack_fleet, route, API_KEY)
            for _ in range(3):  # the agent is talking when the caller hangs up
                await asyncio.wait_for(ws.recv(), attacks.ANSWER_S)
            await ws.close()
        # Every hang-up has reached its replica (and the proxy finished its requests) once all slots are free.
        await asyncio.to_thread(wait_until, lambda: status(attack_fleet)["live_sessions"] == 0, attacks.CONNECT_S,
                                "every conversation off the books")

    asyncio.run(asyncio.wait_for(scenario(), GUARD_S))
    texts = logs.new_text()
    errors = [line for text in texts.values() for line in text.splitlines() if line.startswith("ERROR")]
    assert not errors, errors
    assert attacks._tracebacks(texts)["count"] == 0, texts
