"""The Serve deployments and applications; every Serve option is derived from the plexray config.

Three applications, so that status, health and web files never wait behind conversations:
  sessions (route prefix '/')       PersonaPlexReplica x N (autoscaled): /api/chat, /ws/voice/{persona},
                                    and the web client's page at / (web_client.py says why there);
                                    SessionLedger x 1: fleet-wide admission state
  ops      (route prefix '/voice')  StatusService x 1: /voice/status, /voice/healthz, /voice/readyz
  web      (route prefix '/assets') WebClientService x 1: the web client's files (dist.tgz's assets/)

Per replica: engine slots = sessions_per_replica; Serve's max_ongoing_requests = that plus
waiting_line.max_callers_per_replica (slots only for callers waiting for a session) plus
reject_headroom (slots only ever used to answer 'busy' clearly); autoscaling targets
sessions_per_replica x target_utilisation ongoing requests; graceful_shutdown_timeout_s covers
engine.max_session_s, so a replica chosen for downscaling finishes its conversations first.
A replica whose engine failed fails Serve's health check (every health_check_period_s) and is replaced.
"""

from __future__ import annotations

import logging
import typing as tp

from ray import serve
from ray.serve.config import RequestRouterConfig

from plexray.errors import ConfigError
from plexray.serve.app.admission import AdmissionLedger
from plexray.serve.app.errors import AdmissionDenied
from plexray.serve.app.grounding import check_knowledge_bases, describe_knowledge
from plexray.serve.app.personas import check_voices
from plexray.serve.app.ingress import SessionService, session_app, status_app
from plexray.serve.app.security import Caller
from plexray.serve.app.web_client import assets_app, bundle_directory, page_route
from plexray.settings import PlexrayConfig

logger = logging.getLogger("ray.serve")  # Serve's logger: lines land in the replica logs

LEDGER_DEPLOYMENT = "SessionLedger"


# Access logs off: every replica reports every few seconds, which would drown the ledger's log.
@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False})
class SessionLedger:
    """Thin shell around AdmissionLedger; denials come back as data (exceptions do not cross handles cleanly)."""

    def __init__(self, config: dict):
        serve_config = PlexrayConfig.model_validate(config).serve
        self.ledger = AdmissionLedger(serve_config.security.new_sessions_per_minute, serve_config.status_report_s)

    async def admit(self, replica_id: str, session_id: str, caller: dict, capacity: int) -> dict | None:
        try:
            self.ledger.admit(replica_id, session_id, Caller(**caller), capacity)
        except AdmissionDenied as denied:
            return {"reason": denied.reason, "message": str(denied), "close_code": denied.close_code,
                    "retry_after_s": denied.retry_after_s}
        return None

    async def release(self, replica_id: str, session_id: str) -> None:
        self.ledger.release(replica_id, session_id)

    async def report(self, replica_id: str, capacity: int, sessions: dict, metrics: dict, waiting: dict) -> None:
        self.ledger.report(replica_id, capacity, sessions, metrics, waiting)

    async def forget(self, replica_id: str) -> None:
        self.ledger.forget(replica_id)

    async def snapshot(self) -> dict:
        return self.ledger.snapshot()


class HandleLedger:
    """The ledger deployment behind the `Ledger` interface that SessionService expects."""

    def __init__(self, handle):
        self.handle = handle

    async def admit(self, replica_id: str, session_id: str, caller: Caller, capacity: int) -> None:
        denial = await self.handle.admit.remote(replica_id, session_id, caller.__dict__, capacity)
        if denial is not None:
            raise AdmissionDenied(denial["reason"], denial["message"], denial["close_code"], denial["retry_after_s"])

    async def release(self, replica_id: str, session_id: str) -> None:
        await self.handle.release.remote(replica_id, session_id)

    async def report(self, replica_id: str, capacity: int, sessions: dict, metrics: dict, waiting: dict) -> None:
        await self.handle.report.remote(replica_id, capacity, sessions, metrics, waiting)

    async def forget(self, replica_id: str) -> None:
        await self.handle.forget.remote(replica_id)

    async def snapshot(self) -> dict:
        return await self.handle.snapshot.remote()


# serve.ingress calls its builder after the constructor, with no arguments. The deployment classes
# are pickled by value (their globals are copies), so the constructor leaves the app it built in
# the imported ingress module, where the builder finds it.
def _replica_app():
    from plexray.serve.app import ingress

    return ingress.PROCESS_APPS["sessions"]


def _status_app():
    from plexray.serve.app import ingress

    return ingress.PROCESS_APPS["status"]


def _web_app():
    from plexray.serve.app import ingress

    return ingress.PROCESS_APPS["web"]


@serve.deployment
@serve.ingress(_replica_app)
class PersonaPlexReplica:
    """One model, one Engine with sessions_per_replica slots, and the WebSocket endpoints in front of it."""

    def __init__(self, config: dict, ledger):
        from plexray.serve.app import ingress
        from plexray.serve.app.telemetry import ReplicaTelemetry
        from plexray.serve.engine import Engine

        platform = PlexrayConfig.model_validate(config)
        replica_id = serve.get_replica_context().replica_id.unique_id
        bundle = platform.model.load()
        engine = Engine(bundle, platform.serve.engine)
        self.service = SessionService(engine, platform.serve, HandleLedger(ledger), replica_id,
                                      ReplicaTelemetry(replica_id), platform.knowledge)
        self.fault_injection = platform.serve.fault_injection
        page = page_route(bundle_directory(bundle.files.web_client))
        ingress.PROCESS_APPS["sessions"] = session_app(self.service, page)
        logger.info("replica %s ready: %s, %d session slots", replica_id, platform.model.checkpoint, engine.capacity)

    async def check_health(self) -> None:
        """Serve's periodic health check: raises once the engine has failed, and Serve replaces this replica.
        A coroutine: Serve warns about a plain method run on the replica's event loop."""
        self.service.check_health()

    def inject_engine_fault(self, message: str) -> None:
        """Make the engine's next tick raise (tests, failure drills): a Serve handle method, never an HTTP route."""
        if not self.fault_injection:
            raise ConfigError("serve.fault_injection is off: this replica's engine cannot be made to fail")
        logger.warning("replica %s: injecting an engine fault: %s", serve.get_replica_context().replica_id.unique_id,
                       message)
        self.service.engine.inject_fault(message)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(_status_app)
class StatusService:
    """/voice/status, /voice/healthz, /voice/readyz on their own replica: never behind a conversation."""

    def __init__(self, config: dict):
        from plexray.serve.app import ingress

        platform = PlexrayConfig.model_validate(config)
        ledger = serve.get_deployment_handle(LEDGER_DEPLOYMENT, app_name=platform.serve.app_name)
        knowledge = describe_knowledge(platform.serve.personas, platform.knowledge)
        ingress.PROCESS_APPS["status"] = status_app(platform.serve, HandleLedger(ledger), knowledge)


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress(_web_app)
class WebClientService:
    """/assets/...: the files of the checkpoint's web client (dist.tgz) on their own light replica."""

    def __init__(self, config: dict):
        from plexray.model import reference
        from plexray.serve.app import ingress

        model = PlexrayConfig.model_validate(config).model
        # Only dist.tgz: this replica must not download the model to find it.
        archive = reference.resolve_web_client(model.checkpoint, model.cache_dir)
        ingress.PROCESS_APPS["web"] = assets_app(bundle_directory(archive))


def deployment_options(config: PlexrayConfig) -> dict[str, tp.Any]:
    """Serve options of PersonaPlexReplica, all derived from the `serve` section."""
    serve_config = config.serve
    scaling = serve_config.autoscaling
    return {
        # A waiting caller holds one of the slots set aside for the waiting line, never a session's; the
        # headroom beyond both is only ever used to answer 'busy'.
        "max_ongoing_requests": (serve_config.sessions_per_replica + serve_config.waiting_line.max_callers_per_replica
                                 + serve_config.reject_headroom),
        # Unbounded: every new connection waits in the router until a replica takes it (a burst of
        # connects queues there for milliseconds); a bound would answer a burst with a bare 500.
        # Waiting never hangs because full replicas still have headroom slots to refuse with.
        "max_queued_requests": -1,
        "autoscaling_config": {
            "min_replicas": scaling.min_replicas, "max_replicas": scaling.max_replicas,
            "initial_replicas": max(scaling.min_replicas, 1),
            "target_ongoing_requests": serve_config.target_ongoing_requests,
            "upscale_delay_s": scaling.upscale_delay_s, "downscale_delay_s": scaling.downscale_delay_s,
        },
        "graceful_shutdown_timeout_s": serve_config.graceful_shutdown_timeout_s,
        "health_check_period_s": serve_config.health_check_period_s,
        "ray_actor_options": {"num_cpus": serve_config.num_cpus, "num_gpus": serve_config.num_gpus},
        "request_router_config": RequestRouterConfig(
            request_router_class="plexray.serve.app.routing:LeastSessionsRouter"),
    }


def sessions_application(config: PlexrayConfig):
    """The Serve application of the conversations (route prefix '/')."""
    # Here, when the application is built: a persona naming a voice the checkpoint lacks, or a missing or
    # empty knowledge base, fails the deploy with a ConfigError naming it, not the first call.
    check_voices(config.serve.personas, config.model)
    check_knowledge_bases(config.serve.personas, config.knowledge)
    raw = portable(config)
    ledger = SessionLedger.bind(raw)
    return PersonaPlexReplica.options(**deployment_options(config)).bind(raw, ledger)


def ops_application(config: PlexrayConfig):
    """The Serve application of status and health (route prefix '/voice')."""
    return StatusService.bind(portable(config))


def web_application(config: PlexrayConfig):
    """The Serve application of the web client's files (route prefix '/assets')."""
    return WebClientService.bind(portable(config))


def portable(config: PlexrayConfig) -> dict:
    """The config as plain data for replicas: only what was set (defaults are re-derived there)."""
    return config.model_dump(mode="json", exclude_unset=True)
