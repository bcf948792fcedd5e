"""The attack suite's one module: malformed inputs by category, and the run that throws them at a live fleet.

Shared by the CI tests (tests/reliability/, small) and the full run (bench/attack.py, bounded). While
the attacks run, a good session on /ws/voice talks throughout (an audio_chunk every 80 ms) and its
longest gap between agent frames is measured; at the end a burst of extra callers meets a full fleet.

Every input is sent and its answer read before the next one goes out, so each answer is matched to its
input. Outcomes:
  error             the protocol's error message; the conversation goes on
  error+close CODE  the protocol's error message, then the socket closed with CODE
  error, no close   an error announcing a close (too many errors) that did not follow
  close CODE        closed with CODE and no error message (e.g. 1009 from the WebSocket layer)
  http STATUS       answered at HTTP (a plain route, or a WebSocket handshake the proxy refused)
  silent            nothing within ANSWER_S: dropped silently (the suite's targets allow none)

Figures: inputs and outcomes per category, tracebacks in the Serve logs written during the run, replica
restarts (Serve's replica actors before/after), engines stopped, the good session's longest gap, the
burst (count, how many were told 'busy', p99 time to that answer), and a flood of client error messages
(0x05) on one conversation: how far the replica logs grew and how the conversation ended.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import json
import multiprocessing
import random
import time
from pathlib import Path

import httpx
import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.app import binary_protocol as binary
from plexray.serve.app import json_protocol
from ogg_pages import OPUS_HEAD_AT, opus_pages, tone, with_byte  # tests/serve_app (on sys.path)
from serve_helpers import OVERRIDES, wait_until  # tests/serve_app: the fleet the serve-app tests run (on sys.path)

ANSWER_S = 15.0  # an input with no answer within this is 'silent' (generous: the machine is shared)
CONNECT_S = 60.0  # opening a conversation (prompt prefill) on a loaded machine
INPUTS_PER_CONNECTION = 15  # under the server's max_protocol_errors (20): most answers are plain 'error'
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
STOP_POLL_S = 0.25  # how often the good session looks whether the run is over
REPLICA_CLASS = "PersonaPlexReplica"

# The serve-app tests' fleet pinned to one replica (2 sessions): the good session and one held
# conversation fill it, so the burst meets a full fleet without waiting for autoscaling.
FLEET_OVERRIDES = [
    *OVERRIDES,
    "serve.autoscaling={min_replicas: 1, max_replicas: 1}",
    "serve.engine={max_session_s: 1800, idle_timeout_s: 60}",  # the good session outlives the whole run
]
MAX_MESSAGE_BYTES = 65536  # serve.security.max_message_bytes in OVERRIDES
REPORT_FLOOD_MESSAGES = 2000  # client 0x05 messages at once on one conversation (issue 23: 665 kB of log before)


@dataclasses.dataclass(frozen=True)
class BadMessage:
    """One malformed WebSocket message for an open conversation on `route` ('chat' or 'voice')."""

    category: str
    route: str
    payload: bytes | str
    alone: bool = False  # needs a conversation of its own (an Ogg stream that starts with it)


@dataclasses.dataclass(frozen=True)
class BadRequest:
    """A bad request at connection time: an HTTP route, or a WebSocket handshake with a bad path or query."""

    category: str
    path: str  # with its query string
    websocket: bool = False
    method: str = "GET"
    authorised: bool = True


# ----- the inputs ---------------------------------------------------------------------------------
def ogg_streams(rng: random.Random, count: int) -> list[bytes]:
    """Opus streams that are wrong from their first page: truncated, corrupt, a bad OpusHead, pages out of order."""
    pages = opus_pages(1.0)
    head, tags, audio = pages[0], pages[1], pages[2:]
    fixed = [
        head[:OPUS_HEAD_AT + 10],  # OpusHead page cut short (its 19 bytes announced, 10 sent)
        head + tags + audio[0][:30],  # an audio page cut short
        head + tags + audio[0][:-1] + bytes([audio[0][-1] ^ 0xFF]),  # checksum wrong
        with_byte(head, 4, 1) + tags,  # Ogg version 1
        with_byte(head, OPUS_HEAD_AT + 8, 16) + tags,  # OpusHead version 16
        with_byte(head, OPUS_HEAD_AT + 9, 2) + tags,  # stereo
        with_byte(head, OPUS_HEAD_AT + 9, 0) + tags,  # no channels
        with_byte(head, OPUS_HEAD_AT, ord("X")) + tags,  # not an OpusHead
        b"".join(audio[:2]),  # audio before any OpusHead
        head + audio[0],  # no OpusTags
    ]
    streams = []
    while len(streams) < count:
        stream = fixed[len(streams)] if len(streams) < len(fixed) else _flip_a_byte(rng, head + tags + audio[0])
        streams.append(stream)
    return streams


def _flip_a_byte(rng: random.Random, stream: bytes) -> bytes:
    """A random byte of the stream changed (the page CRC then fails, or the page length is wrong)."""
    flipped = bytearray(stream)
    flipped[rng.randrange(len(flipped))] ^= rng.randrange(1, 256)
    return bytes(flipped)


def chat_messages(rng: random.Random, scale: int, max_message_bytes: int) -> list[BadMessage]:
    """Malformed messages of the binary protocol (/api/chat), about 30 * scale of them."""
    known_kinds = {kind.value for kind in binary.Kind}
    unknown_kinds = [kind for kind in range(256) if kind not in known_kinds]
    messages = [BadMessage("chat_bad_kind", "chat", b"")]
    messages += [BadMessage("chat_bad_kind", "chat", bytes([binary.Kind.HANDSHAKE])),
                 BadMessage("chat_bad_kind", "chat", bytes([binary.Kind.TEXT]) + b"hello"),
                 BadMessage("chat_bad_kind", "chat", bytes([binary.Kind.CONTROL])),
                 BadMessage("chat_bad_kind", "chat", bytes([binary.Kind.CONTROL, 0x07])),
                 BadMessage("chat_bad_kind", "chat", "a text message on a binary protocol")]
    messages += [BadMessage("chat_bad_kind", "chat", bytes([kind]) + rng.randbytes(rng.randrange(64)))
                 for kind in rng.choices(unknown_kinds, k=4 * scale)]
    messages += [BadMessage("chat_ogg", "chat", bytes([binary.Kind.AUDIO]) + stream, alone=True)
                 for stream in ogg_streams(rng, 10 * scale)]
    audio = bytes([binary.Kind.AUDIO])
    messages += [BadMessage("chat_oversized", "chat", audio + rng.randbytes(max_message_bytes + extra))
                 for extra in (1, 1000, 100_000)[:1 + scale]]
    messages += [BadMessage("chat_garbage", "chat", audio + rng.randbytes(rng.randrange(1, 4000)))
                 for _ in range(4 * scale)]
    messages += [BadMessage("chat_bad_metadata", "chat", bytes([binary.Kind.METADATA]) + payload)
                 for payload in (b"[" * 100_000 + b"]" * 100_000, b'{"n": ' + b"9" * 5000 + b"}", b"\xff\xfe",
                                 b"[1, 2]", b'"a string"', b"{")]
    return messages


def voice_messages(rng: random.Random, scale: int, max_message_bytes: int) -> list[BadMessage]:
    """Malformed messages of the JSON protocol (/ws/voice/{persona}), about 30 * scale of them."""
    def message(category: str, payload: str) -> BadMessage:
        return BadMessage(category, "voice", payload)

    def audio(**fields) -> str:
        return json.dumps({"type": "audio_chunk", **fields})

    messages = [message("voice_deep_nesting", "[" * depth + "]" * depth) for depth in (1000, 100_000)[:1 + scale]]
    messages += [message("voice_deep_nesting", '{"type": "ping", "x": ' + "{\"a\": " * depth + "1" + "}" * depth + "}")
                 for depth in (2000, 50_000)[:scale]]
    messages += [message("voice_huge_numbers", text) for text in (
        '{"type": "audio_chunk", "data": "", "sample_rate": ' + "9" * 5000 + "}",
        '{"type": "audio_chunk", "data": "", "sample_rate": 1e400}',
        '{"type": "audio_chunk", "data": "", "sample_rate": -1e400}',
        '{"type": "ping", "n": ' + "1" * 10_000 + "}",
    )]
    messages += [message("voice_bad_audio", audio(data=base64.b64encode(bytes(3840)).decode(), sample_rate=rate))
                 for rate in (0, 1, -48000, 10**9, 2**63)[:3 + scale]]
    wrong = [["audio_chunk"], {"a": 1}, 7, None, True, 1.5]
    messages += [message("voice_wrong_types", json.dumps({"type": value})) for value in wrong]
    messages += [message("voice_wrong_types", audio(data=value)) for value in wrong[:3 * scale]]
    messages += [message("voice_wrong_types", audio(data="", format=value)) for value in wrong[:2 * scale]]
    messages += [message("voice_wrong_types", json.dumps(value)) for value in ([], "ping", 3, None)]
    messages += [message("voice_unknown_types", json.dumps({"type": name})) for name in
                 ["dance", "", "AUDIO_CHUNK", "ping\n\r\x00", "x" * 10_000, "connected", "error"]]
    messages += [message("voice_unknown_types", json.dumps({"type": _random_text(rng, rng.randrange(1, 80))}))
                 for _ in range(4 * scale)]
    # Just over the limit in UTF-8 bytes, though (but for ASCII) well under it in characters.
    for character, width in (("a", 1), ("é", 2), ("€", 3), ("😀", 4))[:2 + 2 * (scale > 1)]:
        pad = character * (max_message_bytes // width)
        messages.append(message("voice_oversized_text", json.dumps({"type": "ping", "pad": pad}, ensure_ascii=False)))
    messages += [message("voice_bad_base64", audio(data=data)) for data in
                 ["not base64!", "AAA", "A===", "AAAA" * 10 + "\x00", "=" * 8, "AAAAA"]]
    # audio that is not a whole number of float32 samples (4 bytes each)
    not_whole_samples = [rng.randbytes(4 * rng.randrange(1, 500) + 1) for _ in range(2 * scale)]
    messages += [message("voice_bad_base64", audio(data=base64.b64encode(data).decode())) for data in not_whole_samples]
    messages += [message("voice_garbage", _random_text(rng, rng.randrange(1, 2000))) for _ in range(3 * scale)]
    messages += [BadMessage("voice_garbage", "voice", rng.randbytes(rng.randrange(1, 2000))) for _ in range(2 * scale)]
    return messages


def _random_text(rng: random.Random, length: int) -> str:
    alphabet = "{}[]\":,\\0123456789aeiouxyz \n\t\x00\x7fé€😀"
    return "".join(rng.choice(alphabet) for _ in range(length))


def bad_requests(rng: random.Random, scale: int) -> list[BadRequest]:
    """Bad requests to the HTTP routes and bad WebSocket handshakes (path, query), about 45 * scale of them."""
    requests = [BadRequest("http_routes", path) for path in (
        "/voice/status?verbose=%00%ff", "/voice/readyz?" + "x=1&" * 500, "/voice/healthz/..", "/voice/nothing",
        "/?worker_addr=%0d%0aSet-Cookie:x", "/assets/../../../etc/passwd", "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/" + "a" * 4000, "/%00", "/voice/status?" + "a" * 60_000)]
    requests += [BadRequest("http_routes", path, method=method) for path, method in (
        ("/voice/status", "POST"), ("/voice/readyz", "DELETE"), ("/", "PUT"), ("/api/chat", "GET"))]

    def handshake(category: str, query: str, route: str = "/api/chat", authorised: bool = True) -> BadRequest:
        return BadRequest(category, f"{route}?{query}" if query else route, websocket=True, authorised=authorised)

    sampling = ["text_temperature=1e308", "audio_temperature=1e308", "repetition_penalty=1e308",
                "text_topk=99999999999999999999999", "audio_topk=-5", "text_temperature=nan", "audio_temperature=inf",
                "text_temperature=-1", "pad_mult=abc", "text_seed=-2", "audio_seed=1e400",
                "repetition_penalty_context=-3", "text_topk=" + "9" * 5000, "text_temperature=0x10"]
    requests += [handshake("handshake_sampling", query) for query in sampling]
    requests += [handshake("handshake_sampling", query, "/ws/voice/assistant") for query in sampling[:4 * scale]]
    voices = ["voice_prompt=NOPE.pt", "voice_prompt=../../../../etc/passwd", "voice_prompt=%00",
              "voice_prompt=" + "V" * 3000, "voice_prompt=NATF0.wav.pt.exe"]
    requests += [handshake("handshake_voice", query) for query in voices]
    requests += [handshake("handshake_voice", query, "/ws/voice/assistant") for query in voices[:2 * scale]]
    requests += [handshake("handshake_context", "context=" + "word " * (length // 5))
                 for length in (10_000, 40_000, 200_000)[:1 + scale]]
    # Request lines past websockets' 8 KB limit: refused in Serve's proxy (414), answered thanks to
    # plexray.serve.proxy_hook (uvicorn alone leaves them unanswered).
    requests += [handshake("handshake_context", "text_prompt=" + "p" * length) for length in (50_000, 9_000)[:scale]]
    requests += [handshake("handshake_route", "", route) for route in (
        "/ws/voice/nobody", "/ws/voice/" + "x" * 3000, "/ws/voice/%00", "/ws/nothing", "/api/chat/extra")]
    requests += [handshake("handshake_auth", "", authorised=False),
                 handshake("handshake_auth", "api_key=wrong-key", "/ws/voice/assistant", authorised=False)]
    for _ in range(4 * scale):
        field = rng.choice(sampling).split("=")[0]
        # A letter first: no number parses from it, so the value is always bad (a random one may be valid).
        requests.append(handshake("handshake_sampling", f"{field}=x{_random_text(rng, rng.randrange(1, 40))}"))
    return requests


# ----- throwing them ------------------------------------------------------------------------------
class Tally:
    """Outcomes per category: {category: {outcome: count}}."""

    def __init__(self) -> None:
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.unanswered: list[str] = []  # the inputs that got no answer, shortly described
        self.accepted: list[str] = []  # the bad requests that opened a conversation all the same

    def add(self, category: str, outcome: str, what: object = None) -> None:
        self.outcomes[category][outcome] += 1
        if outcome in ("silent", "accepted"):
            (self.unanswered if outcome == "silent" else self.accepted).append(f"{category}: {what!r:.80}")

    def figures(self) -> dict:
        return {category: {"inputs": sum(counts.values()), "outcomes": dict(sorted(counts.items()))}
                for category, counts in sorted(self.outcomes.items())}

    def total(self, outcome: str | None = None) -> int:
        return sum(count for counts in self.outcomes.values() for name, count in counts.items()
                   if outcome is None or name == outcome)


def _headers(api_key: str | None) -> dict | None:
    return {"Authorization": f"Bearer {api_key}"} if api_key else None


def _connect(url: str, api_key: str | None):
    return connect(url, additional_headers=_headers(api_key), proxy=None, max_size=None, open_timeout=CONNECT_S)


def _error_text(route: str, message: bytes | str) -> str | None:
    """The text of the protocol's error message, or None for any other message."""
    if route == "chat":
        is_error = isinstance(message, bytes) and message[:1] == bytes([binary.Kind.ERROR])
        return message[1:].decode("utf-8", "replace") if is_error else None
    decoded = json.loads(message) if isinstance(message, str) else {}
    return f"{decoded.get('code')}: {decoded.get('message')}" if decoded.get("type") == "error" else None


def _is_ready(route: str, message: bytes | str) -> bool:
    if route == "chat":
        return message == binary.handshake()
    return isinstance(message, str) and json.loads(message).get("type") == "connected"


async def _answer(ws, route: str) -> str:
    """Read until the answer to the input just sent: its error (and the close it announces), or a close.
    Agent frames that arrive meanwhile are skipped."""
    error = None
    try:
        while (error := _error_text(route, await asyncio.wait_for(ws.recv(), ANSWER_S))) is None:
            pass
        if not error.startswith("too_many_errors") and not error.endswith(": closing"):
            return "error"
        while True:  # the error budget is spent: the server says so, then closes
            await asyncio.wait_for(ws.recv(), ANSWER_S)
    except TimeoutError:
        return "error, no close" if error else "silent"
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
        return f"error+close {code}" if error else f"close {code}"


async def open_conversation(urls: dict, route: str, api_key: str):
    """A conversation on `route` ('chat' or 'voice'), opened once the fleet has a free slot.

    The attacks hang up and call again at once. A hang-up reaches the replica only after its caller
    has gone (Serve's proxy answers the client's close itself and tells the replica in a message of its
    own), so for a moment the replica still counts the conversation just hung up; the fleet here has no
    waiting line (busy at once), so the next call waits for the documented signal of a free slot:
    /voice/readyz answering 200.
    """
    await asyncio.to_thread(wait_until, lambda: _has_a_free_slot(urls), CONNECT_S, "a free slot (/voice/readyz)")
    ws = await _connect(urls["ws"] + ("/api/chat" if route == "chat" else "/ws/voice/assistant"), api_key)
    first = await asyncio.wait_for(ws.recv(), CONNECT_S)
    if not _is_ready(route, first):
        await ws.close()
        raise RuntimeError(f"the attacker's conversation was refused: {first!r:.200}")
    return ws


def _has_a_free_slot(urls: dict) -> bool:
    return httpx.get(urls["http"] + "/voice/readyz", timeout=ANSWER_S).status_code == 200


def _conversations_for(messages: list[BadMessage]) -> list[list[BadMessage]]:
    """The messages grouped into conversations: same route, up to INPUTS_PER_CONNECTION, `alone` ones apart."""
    batches: list[list[BadMessage]] = []
    for message in messages:
        last = batches[-1] if batches else None
        if last and not message.alone and not last[0].alone and last[0].route == message.route \
                and len(last) < INPUTS_PER_CONNECTION:
            last.append(message)
        else:
            batches.append([message])
    return batches


async def throw_messages(urls: dict, messages: list[BadMessage], api_key: str, tally: Tally) -> None:
    """Each message on an open conversation of its route, its answer read before the next one goes out."""
    for batch in _conversations_for(messages):
        ws = await open_conversation(urls, batch[0].route, api_key)
        try:
            for index, message in enumerate(batch):
                await ws.send(message.payload)
                outcome = await _answer(ws, message.route)
                tally.add(message.category, outcome, message.payload)
                if "close" in outcome and index + 1 < len(batch):  # the rest go on a new conversation
                    await ws.close()
                    ws = await open_conversation(urls, batch[0].route, api_key)
        finally:
            await ws.close()


async def flood_errors(urls: dict, route: str, api_key: str, count: int, tally: Tally) -> None:
    """Past the server's error budget: every message answered, and the conversation closed (1007)."""
    ws = await open_conversation(urls, route, api_key)
    try:
        for _ in range(count):
            await ws.send(b"\x7f" if route == "chat" else '{"type": "flood"}')
            outcome = await _answer(ws, route)
            tally.add(f"{route}_error_flood", outcome)
            if "close" in outcome:
                break
    finally:
        await ws.close()


async def flood_reports(urls: dict, api_key: str, count: int, tally: Tally) -> dict:
    """`count` client error messages (0x05, 200 bytes: the server only logs them) sent at once on one
    /api/chat conversation: how far the replicas' logs grew, and how the conversation ended."""
    logs = LogWatch(serve_log_dir())
    logs.start()
    ws = await open_conversation(urls, "chat", api_key)
    sent, code = 0, None
    try:
        for _ in range(count):
            await ws.send(bytes([binary.Kind.ERROR]) + b"x" * 199)
            sent += 1
        while True:  # the answers (past the rate, each an error), until the server closes
            await asyncio.wait_for(ws.recv(), ANSWER_S)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        pass  # tallied as 'silent'
    finally:
        await ws.close()
    tally.add("chat_report_flood", f"error+close {code}" if code else "silent")
    grown = sum(len(text.encode()) for name, text in logs.new_text().items() if name.startswith("replica_"))
    return {"messages": count, "sent_before_close": sent, "close_code": code, "replica_log_bytes": grown}


async def send_requests(urls: dict, requests: list[BadRequest], api_key: str, tally: Tally) -> None:
    async with httpx.AsyncClient(timeout=ANSWER_S) as http:
        for request in requests:
            if not request.websocket:
                try:
                    response = await http.request(request.method, urls["http"] + request.path)
                    tally.add(request.category, f"http {response.status_code}")
                except httpx.TimeoutException:
                    tally.add(request.category, "silent", request.path)
                continue
            try:
                async with _connect(urls["ws"] + request.path, api_key if request.authorised else None) as ws:
                    first = await asyncio.wait_for(ws.recv(), CONNECT_S)
                    # A refused session answers with an error, then closes; an accepted one did not refuse the input.
                    if _is_ready("chat" if request.path.startswith("/api/chat") else "voice", first):
                        tally.add(request.category, "accepted", request.path)
                        continue
                    try:
                        await asyncio.wait_for(ws.recv(), ANSWER_S)
                        tally.add(request.category, "error")
                    except ConnectionClosed as closed:
                        tally.add(request.category, f"error+close {closed.rcvd.code if closed.rcvd else None}")
            except InvalidStatus as refused:
                tally.add(request.category, f"http {refused.response.status_code}")
            except ConnectionClosed as closed:
                tally.add(request.category, f"close {closed.rcvd.code if closed.rcvd else None}")
            except TimeoutError:
                tally.add(request.category, "silent", request.path)


class GoodSession:
    """A conversation on /ws/voice that talks throughout: an audio_chunk every 80 ms, agent frames timed.

    It runs in a process of its own (as a real caller would be), so neither this process's event loop nor
    its interpreter lock, busy with thousands of inputs and 60 connects at once, can delay the frames it
    times: its gaps are the server's. It stamps every agent frame with time.monotonic() (one clock for
    every process on the machine); the longest gap is reported for the whole run and per phase, the
    phases being marked here with `mark(name)` (a gap counts in the phase where it ends).
    """

    def __init__(self, urls: dict, api_key: str):
        self.urls, self.api_key = urls, api_key
        self._phases: list[tuple[float, str]] = [(0.0, "attack")]
        self._connection, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_talk_in_this_process, args=(urls, api_key, child), name="good-session", daemon=True)

    async def start(self) -> None:
        self._process.start()
        message = await asyncio.to_thread(self._receive, CONNECT_S)
        if message != "ready":
            self._process.kill()
            raise RuntimeError(f"the good session did not start: {message}")

    def mark(self, phase: str) -> None:
        self._phases.append((time.monotonic(), phase))

    async def stop(self) -> dict:
        self._connection.send("stop")
        result = await asyncio.to_thread(self._receive, CONNECT_S)
        await asyncio.to_thread(self._process.join, CONNECT_S)
        if not isinstance(result, dict):
            return {"agent_frames": 0, "longest_gap_s": None, "ended_early": f"no report: {result}"}
        times = result["frame_times"]
        gaps: dict[str, float] = {phase: 0.0 for _, phase in self._phases}
        for before, after in zip(times, times[1:]):
            phase = [name for started, name in self._phases if started <= after][-1]
            gaps[phase] = max(gaps[phase], after - before)
        return {"agent_frames": len(times), "longest_gap_s": round(max(gaps.values(), default=0.0), 3),
                "longest_gap_s_by_phase": {phase: round(gap, 3) for phase, gap in gaps.items()},
                "ended_early": result["ended"]}

    def _receive(self, timeout_s: float):
        if not self._connection.poll(timeout_s):
            return f"nothing within {timeout_s:g} s"
        try:
            return self._connection.recv()
        except EOFError:
            return "the process exited"


def _talk_in_this_process(urls: dict, api_key: str, connection) -> None:
    """The good session's process: talk until told to stop, then send back every agent frame's time."""
    frame_times: list[float] = []
    ended = asyncio.run(_talk(urls, api_key, connection, frame_times))
    connection.send({"frame_times": frame_times, "ended": ended})


async def _talk(urls: dict, api_key: str, connection, frame_times: list[float]) -> str | None:
    """Returns why the conversation ended before it was told to stop (None if it did not)."""
    try:
        async with _connect(urls["ws"] + "/ws/voice/assistant", api_key) as ws:
            connected = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_S))
            if connected.get("type") != "connected":
                connection.send(f"refused: {connected}")
                return f"refused: {connected}"
            connection.send("ready")
            speaking = asyncio.create_task(_speak(ws))
            try:
                while not connection.poll():
                    try:
                        message = json.loads(await asyncio.wait_for(ws.recv(), STOP_POLL_S))
                    except TimeoutError:  # no frame yet: look whether the run is over
                        continue
                    if message.get("type") == "audio_chunk":
                        frame_times.append(time.monotonic())
                    elif message.get("type") == "ended":
                        return f"ended: {message.get('reason')}"
                return None
            finally:
                speaking.cancel()
                await asyncio.gather(speaking, return_exceptions=True)
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _speak(ws) -> None:
    voice = tone(FRAME_S)
    next_at = time.monotonic()
    while True:
        await ws.send(json_protocol.encode_client_audio(voice))
        next_at += FRAME_S
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def busy_burst(urls: dict, api_key: str, callers: int) -> dict:
    """`callers` at once on a full fleet: each should be told 'busy' (error, then close 1013), fast."""
    async def call() -> tuple[str, float]:
        started = time.monotonic()
        try:
            async with _connect(urls["ws"] + "/api/chat", api_key) as ws:
                first = await asyncio.wait_for(ws.recv(), CONNECT_S)
                if first == binary.handshake():
                    return "admitted", time.monotonic() - started
                answered = time.monotonic() - started
                try:
                    await asyncio.wait_for(ws.recv(), ANSWER_S)
                except ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else None
                    return ("busy" if code == 1013 else f"close {code}"), answered
                return "error", answered
        except InvalidStatus as refused:
            return f"http {refused.response.status_code}", time.monotonic() - started
        except (ConnectionClosed, TimeoutError, OSError) as exc:
            return type(exc).__name__, time.monotonic() - started

    answers = await asyncio.gather(*(call() for _ in range(callers)))
    busy_s = [seconds for outcome, seconds in answers if outcome == "busy"]
    return {"callers": callers, "outcomes": dict(collections.Counter(outcome for outcome, _ in answers)),
            "busy": len(busy_s),
            "time_to_busy_p99_s": round(float(np.percentile(busy_s, 99)), 3) if busy_s else None,
            "time_to_busy_max_s": round(max(busy_s), 3) if busy_s else None}


async def hold_the_fleet(urls: dict, api_key: str, sessions: int) -> list:
    """Open `sessions` conversations on /api/chat (their output read and dropped) to fill the fleet."""
    held = []
    for _ in range(sessions):
        ws = await open_conversation(urls, "chat", api_key)
        held.append((ws, asyncio.create_task(_drain(ws))))
    return held


async def _drain(ws) -> None:
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


async def let_go(held: list) -> None:
    for ws, draining in held:
        await ws.close()
        draining.cancel()
    await asyncio.gather(*(draining for _, draining in held), return_exceptions=True)


# ----- what the replicas say ---------------------------------------------------------------------
def serve_log_dir() -> Path:
    """The Serve logs of the Ray session this process is connected to (controller, proxy, replica_*.log)."""
    import ray

    node = ray._private.worker._global_node  # the driver's node: its session dir holds the logs
    return Path(node.get_logs_dir_path()) / "serve"


class LogWatch:
    """What the Serve log files gained since `start()`: tracebacks, engine failures."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.offsets: dict[Path, int] = {}

    def start(self) -> None:
        self.offsets = {path: path.stat().st_size for path in self.directory.glob("*.log")}

    def new_text(self) -> dict[str, str]:
        texts = {}
        for path in sorted(self.directory.glob("*.log")):
            with path.open("rb") as log:
                log.seek(self.offsets.get(path, 0))
                texts[path.name] = log.read().decode("utf-8", "replace")
        return texts

    def figures(self) -> dict:
        """Tracebacks in the replicas' logs (this app's code) and in Serve's own (proxy, controller), apart."""
        texts = self.new_text()
        replica_logs = {name: text for name, text in texts.items() if name.startswith("replica_")}
        serve_logs = {name: text for name, text in texts.items() if name not in replica_logs}
        return {"log_files_read": len(texts), "replica_log_files": sorted(replica_logs),
                "tracebacks": _tracebacks(replica_logs),
                "tracebacks_in_serve_logs": _tracebacks(serve_logs),
                "engines_stopped": sum(text.count("the engine failed") for text in replica_logs.values())}


def _tracebacks(texts: dict[str, str]) -> dict:
    """How many tracebacks, and the distinct exception lines that end them."""
    ends = collections.Counter()
    for text in texts.values():
        lines = text.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("Traceback (most recent call last)"):
                end = next((later for later in lines[index + 1:] if later and not later.startswith(" ")), "?")
                ends[end[:160]] += 1
    return {"count": sum(ends.values()), "exceptions": dict(ends)}


def session_replica_actors() -> set[str]:
    """Serve's live session replicas: the ids of their actors (a restarted replica is a new actor)."""
    import ray._private.state

    return {actor_id for actor_id, actor in ray._private.state.actors().items()
            if actor.get("ActorClassName", "").endswith(REPLICA_CLASS) and actor.get("State") == "ALIVE"}


# ----- the whole run -----------------------------------------------------------------------------
def first_of_each_category(inputs: list, count: int | None) -> list:
    """At most `count` inputs of each category (the hand-written ones come first), for a short run."""
    taken: collections.Counter = collections.Counter()
    kept = []
    for item in inputs:
        if count is None or taken[item.category] < count:
            taken[item.category] += 1
            kept.append(item)
    return kept


async def attack(urls: dict, api_key: str, scale: int, burst_callers: int, capacity: int,
                 max_message_bytes: int, per_category: int | None = None, seed: int = 11) -> dict:
    """Everything while a good session talks; then the burst on a full fleet. Returns the figures.

    `scale` multiplies the generated inputs; `per_category` caps each category (None: all of them)."""
    rng = random.Random(seed)
    messages = first_of_each_category(
        chat_messages(rng, scale, max_message_bytes) + voice_messages(rng, scale, max_message_bytes), per_category)
    requests = first_of_each_category(bad_requests(rng, scale), per_category)
    tally = Tally()
    good = GoodSession(urls, api_key)
    await good.start()
    started = time.monotonic()
    try:
        await throw_messages(urls, messages, api_key, tally)
        await send_requests(urls, requests, api_key, tally)
        for route in ("chat", "voice"):
            await flood_errors(urls, route, api_key, 25, tally)
        report_flood = await flood_reports(urls, api_key, REPORT_FLOOD_MESSAGES, tally)
        held = await hold_the_fleet(urls, api_key, capacity - 1)  # the good session holds the other slot
        try:
            good.mark("burst")
            burst = await busy_burst(urls, api_key, burst_callers)
        finally:
            await let_go(held)
    finally:
        good_figures = await good.stop()
    return {"categories": tally.figures(), "inputs": tally.total(), "silent": tally.total("silent"),
            "unanswered": tally.unanswered, "accepted": tally.accepted,
            "attack_s": round(time.monotonic() - started, 1), "good_session": good_figures, "burst": burst,
            "report_flood": report_flood}
