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
import typing as tp
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from plexray.serve.app import binary_protocol, json_protocol
from plexray.serve.app.conversation import ChatProtocol, ConversationLimits, VoiceProtocol, converse
from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.personas import bad_request, resolve_persona, session_settings
from plexray.serve.app.security import Caller, Gatekeeper, redact_query
from plexray.serve.config import ServeConfig
from plexray.serve.engine import Engine, EngineFullError, SessionSettingsError

logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica logs

CLOSE_TRY_AGAIN_LATER = 1013
MAX_CLOSE_REASON_BYTES = 120  # WebSocket close reasons are limited to 123 bytes
LEDGER_GOODBYE_S = 2.0
PROCESS_APPS: dict[str, Starlette] = {}  # the app a Serve replica process built (see deployments.py)


class Ledger(tp.Protocol):
    """The admission ledger as a replica sees it (in-process in tests, a Serve handle in production)."""

    async def admit(self, replica_id: str, session_id: str, caller: Caller, capacity: int) -> None: ...
    async def release(self, replica_id: str, session_id: str) -> None: ...
    async def report(self, replica_id: str, capacity: int, sessions: dict, metrics: dict) -> None: ...
    async def forget(self, replica_id: str) -> None: ...


class SessionService:
    def __init__(self, engine: Engine, config: ServeConfig, ledger: Ledger, replica_id: str, telemetry=None):
        self.engine = engine
        self.config = config
        self.ledger = ledger
        self.replica_id = replica_id
        self.telemetry = telemetry
        self.gatekeeper = Gatekeeper(config.security)
        self.sessions: dict[str, str | None] = {}  # live session id -> API key name
        self._tasks: list[asyncio.Task] = []

    # ----- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.engine.run()), asyncio.create_task(self._report_loop())]

    async def stop(self) -> None:
        """Stop the engine (its sessions end as 'engine_stopped') and the reports; returns promptly.

        Serve waits for this (the ASGI lifespan shutdown) before the replica may exit, so nothing
        here waits on anything that could be gone: the tasks are signalled, not awaited.
        """
        report_loop = self._tasks[1]
        self.engine.stop()
        report_loop.get_loop().call_soon_threadsafe(report_loop.cancel)
        # The ledger may be shutting down too (the whole app is being deleted): never wait on it long;
        # if this does not reach it, it drops this replica once its reports stop.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ledger.forget(self.replica_id), LEDGER_GOODBYE_S)

    async def _report_loop(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(self.config.status_report_s)

    async def report(self) -> None:
        metrics = self.engine.metrics()
        if self.telemetry is not None:
            self.telemetry.publish(metrics)
        summary = {key: metrics[key] for key in ("tick_ms_p50", "tick_ms_p99", "late_ticks", "frames_dropped",
                                                  "sessions_opened", "sessions_refused")}
        try:
            await self.ledger.report(self.replica_id, self.engine.capacity, dict(self.sessions), summary)
        except Exception as exc:  # noqa: BLE001 - the ledger restarting must not stop the reports
            logger.warning("cannot report to the admission ledger: %s", exc)

    # ----- one WebSocket -------------------------------------------------------------------------
    async def chat(self, ws: WebSocket) -> None:
        """/api/chat: the PersonaPlex binary protocol; the default persona plus query-parameter overrides."""
        protocol = ChatProtocol()
        overrides = binary_protocol.session_overrides(ws.query_params)
        await self._serve(ws, self.config.default_persona, overrides, lambda sid, voice: protocol)

    async def voice(self, ws: WebSocket) -> None:
        """/ws/voice/{persona}: the JSON protocol; overrides are the same query parameters."""
        persona = ws.path_params["persona"]
        overrides = binary_protocol.session_overrides(ws.query_params)
        await self._serve(ws, persona, overrides, lambda sid, voice: VoiceProtocol(persona, sid, voice))

    async def _serve(self, ws: WebSocket, persona_name: str, overrides: dict,
                     make_protocol: tp.Callable[[str, str | None], tp.Any]) -> None:
        session_id = ws.query_params.get("session_id") or uuid.uuid4().hex
        logger.info("session %s: %s?%s from %s", session_id, ws.url.path, redact_query(ws.url.query),
                    ws.client.host if ws.client else "?")
        try:
            caller = self.gatekeeper.check(ws.headers, ws.query_params, ws.client)
            settings = session_settings(resolve_persona(self.config.personas, persona_name), overrides)
            session = await self._open(session_id, caller, settings)
        except AdmissionDenied as denied:
            await self._reject(ws, denied, make_protocol(session_id, None))
            return
        self.sessions[session_id] = caller.key_name
        if self.telemetry is not None:
            self.telemetry.session_opened()
        try:
            await ws.accept()
            protocol = make_protocol(session_id, session.settings.voice)
            limits = ConversationLimits(self.config.security.max_message_bytes)
            on_error = (lambda: self.telemetry.protocol_error(protocol.name)) if self.telemetry else (lambda: None)
            reason = await converse(ws, session, protocol, limits, on_error)
            logger.info("session %s ended: %s", session_id, reason)
        finally:
            session.close()
            self.sessions.pop(session_id, None)
            with contextlib.suppress(Exception):
                await self.ledger.release(self.replica_id, session_id)

    async def _open(self, session_id: str, caller: Caller, settings):
        await self.ledger.admit(self.replica_id, session_id, caller, self.engine.capacity)
        try:
            return self.engine.open_session(settings)
        except EngineFullError:
            await self.ledger.release(self.replica_id, session_id)
            raise AdmissionDenied("busy", f"all {self.engine.capacity} sessions of this replica are taken and the "
                                          f"fleet is at its limit; retry in {self.config.busy_retry_after_s} s",
                                  CLOSE_TRY_AGAIN_LATER, self.config.busy_retry_after_s) from None
        except SessionSettingsError as exc:
            await self.ledger.release(self.replica_id, session_id)
            raise bad_request(str(exc)) from None

    async def _reject(self, ws: WebSocket, denied: AdmissionDenied, protocol) -> None:
        """Accept, send the protocol's error message, close with the denial's code: fast and explicit."""
        logger.info("session refused (%s): %s", denied.reason, denied)
        if self.telemetry is not None:
            self.telemetry.session_rejected(denied.reason)
        await ws.accept()
        if isinstance(protocol, VoiceProtocol):
            await ws.send_text(json_protocol.error(str(denied), denied.reason, denied.retry_after_s))
        else:
            await ws.send_bytes(binary_protocol.error(str(denied)))
        reason = f"{denied.reason}: {denied}".encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")
        await ws.close(denied.close_code, reason)


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


def status_app(config: ServeConfig, ledger: StatusSource) -> Starlette:
    """/status (/voice/status under the ops route prefix), /healthz, /readyz, and the browser talk page
    /talk: no session slot involved."""

    personas = [{"name": name, "type": "speech_to_speech", "enabled": True, "full_duplex": True,
                 "mode": "speech_to_speech", "voice": persona.voice, "text_prompt": persona.text_prompt,
                 "allow_overrides": persona.allow_overrides}
                for name, persona in config.personas.items()]
    talk_page = (importlib.resources.files("plexray.serve") / "web" / "talk.html").read_text()

    async def status(request: Request) -> JSONResponse:
        fleet = await ledger.snapshot()
        return JSONResponse({
            "available": fleet["live_sessions"] < fleet["capacity"],
            "adapters": personas, "default_persona": config.default_persona,
            "websocket_endpoint": "/ws/voice/{adapter_name}", "binary_endpoint": "/api/chat",
            "sessions_per_replica": config.sessions_per_replica,
            "capacity": fleet["capacity"], "live_sessions": fleet["live_sessions"], "replicas": fleet["replicas"],
        })

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        fleet = await ledger.snapshot()
        ready = fleet["live_sessions"] < fleet["capacity"]
        body = {"ready": ready, "capacity": fleet["capacity"], "live_sessions": fleet["live_sessions"]}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def talk(request: Request) -> HTMLResponse:
        return HTMLResponse(talk_page)

    return Starlette(routes=[Route("/status", status), Route("/healthz", healthz), Route("/readyz", readyz),
                             Route("/talk", talk)])
