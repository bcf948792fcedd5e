"""The Starlette apps: the session ingress of every engine replica, and the light status app.

`SessionService` is everything a replica does for a WebSocket (checks, admission, the
conversation) on top of one Engine; it runs without Ray Serve too (tests give it an in-process
ledger). The apps are built by functions because module-level ASGI apps do not pickle reliably.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import time
import typing as tp
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from plexray.serve.app import binary_protocol, json_protocol
from plexray.serve.app.admission import BoundedLedger
from plexray.serve.app.conversation import ChatProtocol, ConversationLimits, FrameLatency, VoiceProtocol, converse
from plexray.serve.app.errors import AdmissionDenied, CloseCode
from plexray.serve.app.grounding import CONTEXT_PARAMETER, SessionGrounding
from plexray.serve.app.personas import bad_request, resolve_persona, session_settings
from plexray.serve.app.security import Caller, Gatekeeper, redact_query
from plexray.serve.app.telemetry import CallerCounts
from plexray.serve.app.waiting import Place, WaitingLine
from plexray.knowledge.config import KnowledgeConfig
from plexray.serve.config import ServeConfig
from plexray.serve.engine import Engine, EngineUnavailableError, Session, SessionSettings, SessionSettingsError

logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica logs

MAX_CLOSE_REASON_BYTES = 120  # WebSocket close reasons are limited to 123 bytes
MAX_SESSION_LABEL_CHARS = 128  # a client's ?session_id= (a label only: see SessionService._serve)
LEDGER_GOODBYE_S = 2.0
LEDGER_UNAVAILABLE = "the session ledger is not answering (restarting); fleet figures are unknown for now"
PROCESS_APPS: dict[str, Starlette] = {}  # the app a Serve replica process built (see deployments.py)


class Ledger(tp.Protocol):
    """The admission ledger as a replica sees it (in-process in tests, a Serve handle in production)."""

    async def admit(self, replica_id: str, session_id: str, caller: Caller, capacity: int) -> None: ...
    async def release(self, replica_id: str, session_id: str) -> None: ...
    async def report(self, replica_id: str, capacity: int, sessions: dict, metrics: dict,
                     waiting: dict) -> None: ...
    async def forget(self, replica_id: str) -> None: ...


class SessionService:
    def __init__(self, engine: Engine, config: ServeConfig, ledger: Ledger, replica_id: str, telemetry=None,
                 knowledge: KnowledgeConfig | None = None):
        self.engine = engine
        self.config = config
        # Opens the personas' knowledge bases now: a missing or empty one fails the replica's start.
        self.grounding = SessionGrounding(config.personas, knowledge or KnowledgeConfig(),
                                          lambda text: len(engine.bundle.tokenizer.encode(text)), telemetry)
        self.ledger = BoundedLedger(ledger)  # a restarting ledger must not leave callers hanging
        self.replica_id = replica_id
        self.telemetry = telemetry
        self.gatekeeper = Gatekeeper(config.security)
        self.sessions: dict[str, str | None] = {}  # live session id -> API key name
        self.waiting: dict[str, str | None] = {}  # session id of a caller in the waiting line -> API key name
        self.line = WaitingLine(config.waiting_line.max_callers_per_replica, config.waiting_line.max_wait_s)
        self.frame_latency = FrameLatency()  # user frame received -> agent frame sent, all this replica's sessions
        self.callers = CallerCounts()  # each caller's outcome once (the engine's counts include waiting retries)
        self._engine_loop: asyncio.Task | None = None
        self._report_loop_task: asyncio.Task | None = None

    # ----- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._engine_loop = asyncio.create_task(self._run_engine())
        self._report_loop_task = asyncio.create_task(self._report_loop())

    async def stop(self) -> None:
        """Stop the engine (its sessions end as 'engine_stopped') and the reports; returns promptly.

        Serve waits for this (the ASGI lifespan shutdown) before the replica may exit, so nothing
        here waits on anything that could be gone: the tasks are signalled, not awaited.
        """
        report_loop = self._report_loop_task
        self.engine.stop()
        self.grounding.close()
        if report_loop is not None:
            report_loop.get_loop().call_soon_threadsafe(report_loop.cancel)
        # The ledger may be shutting down too (the whole app is being deleted): never wait on it long;
        # if this does not reach it, it drops this replica once its reports stop.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ledger.forget(self.replica_id), LEDGER_GOODBYE_S)

    async def _run_engine(self) -> None:
        """The engine's loop, supervised.

        A tick that raises fails the engine: its sessions have ended ('engine_failed') and it takes no
        more. This replica then tells the ledger at once that it has no capacity (so /voice/status and
        /voice/readyz stop counting it) and fails check_health from now on, so Serve replaces it.
        """
        try:
            await self.engine.run()
        except EngineUnavailableError:
            logger.exception("replica %s: the engine failed; its sessions ended and Serve will replace this replica",
                             self.replica_id)
            await self.report()

    def check_health(self) -> None:
        """Raise while this replica cannot hold conversations (Serve's health check: it replaces the replica)."""
        failure = self.engine.failure
        if failure is not None:
            raise EngineUnavailableError(f"the engine failed: {failure}")
        if self._engine_loop is None or self._engine_loop.done():
            raise EngineUnavailableError("the engine's loop is not running")

    async def _report_loop(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self.config.status_report_s)

    async def report(self) -> None:
        metrics = self.engine.metrics()
        if self.telemetry is not None:
            self.telemetry.publish(metrics)
        summary = {key: metrics[key] for key in ("ticks", "tick_ms_p50", "tick_ms_p99", "late_ticks", "frames_dropped")}
        summary.update(self.callers.summary())
        summary.update(self.frame_latency.snapshot())
        capacity = self.engine.capacity if self.engine.failure is None else 0  # a failed engine seats nobody
        try:
            await self.ledger.report(self.replica_id, capacity, dict(self.sessions), summary, dict(self.waiting))
        except Exception as exc:  # noqa: BLE001 - the ledger restarting must not stop the reports
            logger.warning("cannot report to the admission ledger: %s", exc)

    # ----- one WebSocket -------------------------------------------------------------------------
    async def chat(self, ws: WebSocket) -> None:
        """/api/chat: the PersonaPlex binary protocol; the default persona plus query-parameter overrides."""
        overrides = binary_protocol.session_overrides(ws.query_params)
        await self._serve(ws, self.config.default_persona, overrides,
                          lambda sid, voice, knowledge=None: ChatProtocol(knowledge))

    async def voice(self, ws: WebSocket) -> None:
        """/ws/voice/{persona}: the JSON protocol; overrides are the same query parameters."""
        persona = ws.path_params["persona"]
        overrides = binary_protocol.session_overrides(ws.query_params)
        await self._serve(ws, persona, overrides,
                          lambda sid, voice, knowledge=None: VoiceProtocol(persona, sid, voice, knowledge))

    async def _serve(self, ws: WebSocket, persona_name: str, overrides: dict,
                     make_protocol: tp.Callable[[str, str | None], tp.Any]) -> None:
        # The server's id keys this replica's books and the ledger's, so no caller can make two sessions
        # one entry (and hold more than its key's limit) or release another caller's. A client's
        # ?session_id= is only a label: logged (escaped) and echoed in the JSON protocol's 'connected'.
        session_id = uuid.uuid4().hex
        label = ws.query_params.get("session_id")
        logger.info("session %s: %s?%s from %s, client label %r", session_id, ws.url.path, redact_query(ws.url.query),
                    ws.client.host if ws.client else "?", label[:MAX_SESSION_LABEL_CHARS] if label else None)
        try:
            if label is not None and len(label) > MAX_SESSION_LABEL_CHARS:
                raise bad_request(f"session_id has {len(label)} characters; at most {MAX_SESSION_LABEL_CHARS}")
            caller = self.gatekeeper.check(ws.headers, ws.query_params, ws.client)
            persona = resolve_persona(self.config.personas, persona_name)
            settings = session_settings(persona, overrides)
            context = ws.query_params.get(CONTEXT_PARAMETER)
            self.grounding.query(persona.knowledge, context)  # a bad `context` is refused before admission
            if self.engine.failure is not None:  # refused before the ledger counts it against the caller
                raise self._unavailable()
            if caller.key_session_limit is None and self._full():
                # Nobody can be seated here, and the ledger has nothing to add for this caller (its rate is
                # not charged for a 'busy', it has no session limit): answered without two round trips to
                # the ledger, which under a burst is most of what a refusal costs.
                raise self._busy_full()
            await self.ledger.admit(self.replica_id, session_id, caller, self.engine.capacity)
        except AdmissionDenied as denied:
            await self._refuse(ws, denied, make_protocol(session_id, None))
            return
        try:
            grounding = await self.grounding.ground(persona_name, persona, settings.text_prompt, context)
            if grounding is not None:
                settings = settings.model_copy(update={"text_prompt": grounding.text_prompt})
            session = await self._take_slot(ws, session_id, caller, settings)
        except AdmissionDenied as denied:  # answered first: the caller need not wait for the ledger's books
            await self._refuse(ws, denied, make_protocol(session_id, None))
            await self._release(session_id)
            return
        if session is None:  # hung up while waiting
            await self._release(session_id)
            return
        self.sessions[session_id] = caller.key_name
        released: asyncio.Future | None = None

        async def end_session() -> None:
            """Take the ended session off this replica's books and the ledger's, once. The conversation
            calls it before its close frame goes out: a caller whose key allows one session may call
            again the moment it sees the close, and /voice/status must not count the session by then."""
            nonlocal released
            if released is None:
                session.close()
                self.sessions.pop(session_id, None)
                released = asyncio.ensure_future(self._release(session_id))
            await asyncio.shield(released)  # a loop cancelled meanwhile does not cancel the release

        # Seeds asked as -1 were drawn by the server: logged, so the conversation can be replayed.
        logger.info("session %s: text_seed %d, audio_seed %d", session_id, session.settings.text_seed,
                    session.settings.audio_seed)
        if grounding is not None:
            grounding.log(logger, session_id)  # which passages went into the prompt, and its token counts
        self.callers.opened += 1
        if self.telemetry is not None:
            self.telemetry.session_opened()
        try:
            if ws.application_state == WebSocketState.CONNECTING:  # not yet accepted to wait in line
                await ws.accept()
            protocol = make_protocol(label or session_id, session.settings.voice,
                                     grounding.info if grounding is not None else None)
            limits = ConversationLimits(self.config.security.max_message_bytes)
            on_error = (lambda: self.telemetry.protocol_error(protocol.name)) if self.telemetry else (lambda: None)
            reason = await converse(ws, session, protocol, limits, on_error, self.frame_latency, end_session)
            logger.info("session %s ended: %s", session_id, reason)
        finally:
            await end_session()

    async def _release(self, session_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.ledger.release(self.replica_id, session_id)

    async def _take_slot(self, ws: WebSocket, session_id: str, caller: Caller,
                         settings: SessionSettings) -> Session | None:
        """An engine slot at once, or after waiting in this replica's line; None if the caller hung up
        while waiting. Raises AdmissionDenied for bad settings, a full line, or a wait too long."""
        session = self.line.try_now(lambda: self._open_session(settings))
        if session is not None:
            return session
        # The place is taken before the first await (the accept): callers arriving together cannot all
        # find room in a line that holds fewer of them.
        place = self.line.reserve()
        if place is None:
            raise self._busy_full()
        self.waiting[session_id] = caller.key_name
        self._line_changed()
        started, outcome = time.monotonic(), "hung_up"
        try:
            with place:
                session = await self._wait_in_line(ws, place, settings)
            if session is not None:
                outcome = "seated"
            return session
        except TimeoutError:
            # Told 'busy' by _refuse: counted in plexray_sessions_rejected{reason="busy"} with the callers
            # refused at once, and in plexray_wait_seconds{outcome="timed_out"}.
            outcome = "timed_out"
            raise self._busy(f"no session slot came free within {self.line.max_wait_s:g} s") from None
        finally:
            waited_s = time.monotonic() - started
            self.waiting.pop(session_id, None)
            self._line_changed()
            self.callers.waited[outcome] += 1
            if self.telemetry is not None:
                self.telemetry.waited(waited_s, outcome)
            logger.info("session %s: %s after %.1f s in the waiting line", session_id, outcome, waited_s)

    async def _wait_in_line(self, ws: WebSocket, place: Place, settings: SessionSettings) -> Session | None:
        """Open the WebSocket and wait in `place`; None if the caller hangs up meanwhile.

        The caller sees a connection awaiting its handshake, as with NVIDIA's server (which makes a
        second caller wait on its lock): NVIDIA's client shows "Connecting..." until then.
        """
        await ws.accept()
        seated = asyncio.create_task(place.wait(lambda: self._open_session(settings)))
        hung_up = asyncio.create_task(_until_disconnected(ws))
        try:
            await asyncio.wait({seated, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (seated, hung_up):
                task.cancel()
            # Both settled before the conversation reads the socket (two readers at once would fail).
            await asyncio.gather(seated, hung_up, return_exceptions=True)
        if not hung_up.cancelled():  # the caller hung up
            if not seated.cancelled() and seated.exception() is None:
                seated.result().close()  # seated in the same instant as the caller left
            return None
        return seated.result()

    def _open_session(self, settings: SessionSettings) -> Session:
        """A slot of this replica's engine; raises EngineFullError while it is full."""
        try:
            return self.engine.open_session(settings)
        except SessionSettingsError as exc:
            raise bad_request(str(exc)) from None
        except EngineUnavailableError:
            raise self._unavailable() from None

    def _full(self) -> bool:
        """Every engine slot taken and no room in the waiting line: a newcomer can only be told 'busy'."""
        return self.engine.active_sessions >= self.engine.capacity and not self.line.has_room

    def _busy_full(self) -> AdmissionDenied:
        return self._busy(f"all {self.engine.capacity} sessions of this replica are taken, {len(self.line)} "
                          f"callers are waiting and the fleet is at its limit")

    def _busy(self, why: str) -> AdmissionDenied:
        return AdmissionDenied("busy", f"{why}; retry in {self.config.busy_retry_after_s} s",
                               CloseCode.TRY_AGAIN_LATER, self.config.busy_retry_after_s)

    def _unavailable(self) -> AdmissionDenied:
        """The answer of a replica whose engine failed (the failure itself is in this replica's log, not for callers)."""
        return AdmissionDenied("unavailable", f"this replica's engine failed and is being replaced; retry in "
                                              f"{self.config.busy_retry_after_s} s", CloseCode.TRY_AGAIN_LATER,
                               self.config.busy_retry_after_s)

    def _line_changed(self) -> None:
        if self.telemetry is not None:
            self.telemetry.waiting_line(len(self.waiting))

    async def _refuse(self, ws: WebSocket, denied: AdmissionDenied, protocol) -> None:
        """Send the protocol's error message and close with the denial's code: fast and explicit."""
        logger.info("session refused (%s): %s", denied.reason, denied)
        self.callers.refused[denied.reason] += 1
        if self.telemetry is not None:
            self.telemetry.session_rejected(denied.reason)
        if ws.application_state == WebSocketState.CONNECTING:
            await ws.accept()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # a waiting caller may be gone already
            if isinstance(protocol, VoiceProtocol):
                await ws.send_text(json_protocol.error(str(denied), denied.reason, denied.retry_after_s))
            else:
                await ws.send_bytes(binary_protocol.error(str(denied)))
            reason = f"{denied.reason}: {denied}".encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
            await ws.close(denied.close_code, reason)


async def _until_disconnected(ws: WebSocket) -> None:
    """Read (and drop) what a waiting client sends before its conversation starts, until it hangs up."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


def session_app(service: SessionService, page: Route) -> Starlette:
    """The WebSocket endpoints, and `page`: GET / (see web_client.py for why the page is served here)."""
    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        yield
        await service.stop()

    return Starlette(routes=[WebSocketRoute("/api/chat", service.chat),
                             WebSocketRoute("/ws/voice/{persona}", service.voice), page], lifespan=lifespan)


class StatusSource(tp.Protocol):
    async def snapshot(self) -> dict: ...


def status_app(config: ServeConfig, ledger: StatusSource, knowledge: dict[str, dict | None] | None = None) -> Starlette:
    """/status (/voice/status under the ops route prefix), /healthz, /readyz, and the browser talk page
    /talk: no session slot involved. `knowledge`: each persona's knowledge base (grounding.describe_knowledge)."""

    personas = [{"name": name, "type": "speech_to_speech", "enabled": True, "full_duplex": True,
                 "mode": "speech_to_speech", "voice": persona.voice, "text_prompt": persona.text_prompt,
                 "allow_overrides": persona.allow_overrides, "knowledge": (knowledge or {}).get(name)}
                for name, persona in config.personas.items()]
    # A persona's prompt is the operator's work (and may name internal facts): where keys are required,
    # only a caller with a valid key sees it, as only such a caller could converse with it.
    without_prompts = [{k: v for k, v in persona.items() if k != "text_prompt"} for persona in personas]
    gatekeeper = Gatekeeper(config.security)

    def personas_for(request: Request) -> list[dict]:
        if not gatekeeper.keys_required:
            return personas
        try:
            gatekeeper.check(request.headers, request.query_params, request.client and tuple(request.client))
        except AdmissionDenied:
            return without_prompts
        return personas
    talk_page = (importlib.resources.files("plexray.serve") / "web" / "talk.html").read_text()
    bounded_ledger = BoundedLedger(ledger)

    async def fleet() -> dict | None:
        """The ledger's view of the fleet; None when it does not answer in time (restarting)."""
        try:
            return await bounded_ledger.snapshot()
        except Exception as exc:  # noqa: BLE001 - a timeout, or the handle's error for a ledger replica gone
            logger.warning("/status: admission ledger unavailable: %s", exc)
            return None

    async def status(request: Request) -> JSONResponse:
        snapshot = await fleet()
        if snapshot is None:
            return JSONResponse({"available": False, "degraded": LEDGER_UNAVAILABLE, "adapters": personas_for(request),
                                 "default_persona": config.default_persona})
        return JSONResponse({
            "available": snapshot["live_sessions"] < snapshot["capacity"],
            "adapters": personas_for(request), "default_persona": config.default_persona,
            "websocket_endpoint": "/ws/voice/{adapter_name}", "binary_endpoint": "/api/chat",
            "sessions_per_replica": config.sessions_per_replica,
            "capacity": snapshot["capacity"], "live_sessions": snapshot["live_sessions"],
            "waiting": snapshot["waiting"], "replicas": snapshot["replicas"],
        })

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        snapshot = await fleet()
        if snapshot is None:
            return JSONResponse({"ready": False, "degraded": LEDGER_UNAVAILABLE}, status_code=503)
        ready = snapshot["live_sessions"] < snapshot["capacity"]
        body = {"ready": ready, "capacity": snapshot["capacity"], "live_sessions": snapshot["live_sessions"]}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def talk(request: Request) -> HTMLResponse:
        return HTMLResponse(talk_page)

    return Starlette(routes=[Route("/status", status), Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/talk", talk)])
