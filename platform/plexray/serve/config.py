"""The `serve` config section: replicas, session caps, autoscaling, personas and security.

One number, `sessions_per_replica`, sets both the engine's slots and Ray Serve's per-replica
limits (see `plexray.serve.app.deployments.deployment_options`), so they cannot disagree.
"""

from __future__ import annotations

import math
import os

import pydantic

from plexray.config import StrictModel
from plexray.knowledge.config import KnowledgeSettings
from plexray.serve.engine.config import EngineConfig, SessionSettings

# SessionSettings fields a client may set per session unless the persona forbids it.
SAMPLING_FIELDS = ("text_temperature", "text_topk", "audio_temperature", "audio_topk", "text_seed", "audio_seed",
                   "repetition_penalty", "repetition_penalty_context", "pad_mult")


def checked_sampling(sampling: dict) -> dict:
    """Session settings given in config (a persona's defaults, an evaluation's): known fields, values in
    range, checked when the config loads rather than at the first session."""
    unknown = sorted(set(sampling) - set(SAMPLING_FIELDS))
    if unknown:
        raise ValueError(f"unknown sampling settings {unknown}; known: {list(SAMPLING_FIELDS)}")
    SessionSettings(**sampling)
    return sampling


class PersonaConfig(StrictModel):
    """A named persona: the voice, the role prompt and sampling defaults of its conversations."""

    voice: str | None = pydantic.Field(None, description="voice name of the checkpoint (e.g. NATF2); None: none")
    text_prompt: str = pydantic.Field("", description="role prompt (wrapped as '<system> ... <system>')")
    sampling: dict[str, float | int] = pydantic.Field(
        default_factory=dict, description=f"defaults for any of {', '.join(SAMPLING_FIELDS)}")
    allow_overrides: list[str] = pydantic.Field(
        default_factory=lambda: list(SAMPLING_FIELDS),
        description="session settings a client may override (query parameters); add 'text_prompt' and "
                    "'voice' to let clients replace the persona's prompt or voice")
    knowledge: KnowledgeSettings | None = pydantic.Field(
        None, description="a knowledge base whose passages join the prompt at session start (query: the caller's "
                          "`context` parameter, else knowledge.query); None: no retrieval")

    @pydantic.field_validator("sampling")
    @classmethod
    def _known_sampling_fields(cls, sampling: dict) -> dict:
        return checked_sampling(sampling)

    @pydantic.field_validator("allow_overrides")
    @classmethod
    def _known_override_fields(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - set(SAMPLING_FIELDS) - {"text_prompt", "voice"})
        if unknown:
            raise ValueError(f"unknown session settings {unknown}")
        return names


class ApiKeyConfig(StrictModel):
    """One API key. The secret comes from an environment variable so config files hold no secrets."""

    name: str = pydantic.Field(description="label used in logs and metrics (never the secret)")
    key_env: str | None = pydantic.Field(None, description="environment variable holding the key")
    key: str | None = pydantic.Field(None, description="the key itself (tests, local demos); prefer key_env")
    max_sessions: int | None = pydantic.Field(None, ge=1, description="live sessions this key may hold fleet-wide")

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> "ApiKeyConfig":
        if (self.key_env is None) == (self.key is None):
            raise ValueError(f"API key {self.name!r}: set exactly one of key_env and key")
        return self

    def secret(self) -> str:
        """The key's value (read where it is used, so the environment of the replica decides)."""
        if self.key is not None:
            return self.key
        value = os.environ.get(self.key_env or "", "")
        if not value:
            from plexray.errors import ConfigError

            raise ConfigError(f"serve.security.api_keys: key {self.name!r}: environment variable "
                              f"{self.key_env} is not set")
        return value


class SecurityConfig(StrictModel):
    api_keys: list[ApiKeyConfig] = pydantic.Field(
        default_factory=list, description="empty: no key needed. Sent as 'Authorization: Bearer KEY', "
                                          "'X-API-Key: KEY' or the query parameter api_key")
    allowed_origins: list[str] = pydantic.Field(
        default_factory=list, description="browser Origin headers accepted (exact, or '*'); empty: any. "
                                          "Clients that send no Origin (non-browsers) are always accepted")
    max_message_bytes: int = pydantic.Field(1 << 20, ge=1024, description="larger client messages are refused")
    new_sessions_per_minute: int = pydantic.Field(
        60, ge=1, description="new sessions one client address may open per minute (fleet-wide)")
    trust_forwarded_for: bool = pydantic.Field(
        False, description="take the client address from X-Forwarded-For (only behind a trusted reverse proxy)")


class AutoscalingSettings(StrictModel):
    min_replicas: int = pydantic.Field(1, ge=0)
    max_replicas: int = pydantic.Field(1, ge=1)
    target_utilisation: float = pydantic.Field(
        0.75, gt=0, le=1, description="live sessions / sessions_per_replica the autoscaler aims for")
    upscale_delay_s: float = pydantic.Field(10.0, ge=0)
    downscale_delay_s: float = pydantic.Field(300.0, ge=0)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSettings":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class WaitingLineConfig(StrictModel):
    """Callers who find the fleet full wait on a replica, first come first served, for its next free slot.

    A waiting caller's WebSocket is open (NVIDIA's client shows "Connecting..." until the handshake)
    and holds one Serve request slot of its replica set aside for waiting, never a session's.
    """

    max_callers_per_replica: int = pydantic.Field(
        2, ge=0, le=1024, description="callers a full replica keeps waiting; one more is answered 'busy' at once. "
                                      "0: no waiting, 'busy' as soon as the fleet is full")
    max_wait_s: float = pydantic.Field(
        30.0, gt=0, description="a caller still waiting after this long is answered 'busy'")


class ServeConfig(StrictModel):
    """How the PersonaPlex fleet is served (Ray Serve deployment options are derived from this)."""

    sessions_per_replica: int = pydantic.Field(
        4, ge=1, le=1024, description="engine slots per replica = live sessions a replica may hold")
    reject_headroom: int = pydantic.Field(
        8, ge=1, description="extra Serve request slots per replica (beyond sessions and waiting callers), used "
                             "only to answer 'busy' to callers beyond the cap (without them Serve would hang or "
                             "answer a bare 500); a burst of callers is answered this many at a time")
    busy_retry_after_s: int = pydantic.Field(5, ge=1, description="Retry-After sent with a 'busy' answer")
    num_gpus: float = pydantic.Field(0.0, ge=0, description="GPUs per replica (1 for the real model)")
    num_cpus: float = pydantic.Field(1.0, ge=0, description="CPUs per replica")
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    waiting_line: WaitingLineConfig = WaitingLineConfig()
    drain_margin_s: float = pydantic.Field(
        30.0, ge=0, description="added to engine.max_session_s for Serve's graceful_shutdown_timeout_s, so a "
                                "replica being stopped lets its conversations finish")
    engine: EngineConfig = pydantic.Field(
        default_factory=EngineConfig, description="engine settings; max_sessions comes from sessions_per_replica")
    personas: dict[str, PersonaConfig] = pydantic.Field(
        default_factory=lambda: {"assistant": PersonaConfig(
            text_prompt="You are a helpful assistant.",
            allow_overrides=[*SAMPLING_FIELDS, "text_prompt", "voice"])},  # what NVIDIA's client expects
        description="named personas of /ws/voice/{persona}")
    default_persona: str = pydantic.Field("assistant", description="the persona /api/chat starts from")
    security: SecurityConfig = SecurityConfig()
    status_report_s: float = pydantic.Field(
        2.0, gt=0, description="how often replicas report live sessions to the ledger (a replica silent for 3x "
                               "this is dropped from /voice/status and its sessions freed)")
    app_name: str = pydantic.Field("plexray", description="Serve application of the session replicas")
    health_check_period_s: float = pydantic.Field(
        10.0, gt=0, description="how often Serve asks each session replica whether its engine works; a replica "
                                "whose engine failed is replaced after 3 failed checks in a row")
    fault_injection: bool = pydantic.Field(
        False, description="tests and failure drills only: lets a Serve handle make a replica's engine fail "
                           "(PersonaPlexReplica.inject_engine_fault; never reachable over HTTP)")

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "ServeConfig":
        if "max_sessions" in self.engine.model_fields_set and self.engine.max_sessions != self.sessions_per_replica:
            raise ValueError(f"engine.max_sessions ({self.engine.max_sessions}) differs from sessions_per_replica "
                             f"({self.sessions_per_replica}); set only sessions_per_replica")
        if self.default_persona not in self.personas:
            raise ValueError(f"default_persona {self.default_persona!r} is not among personas {sorted(self.personas)}")
        # Written into the engine section (not derived on use) so that a dumped config loads back as it was.
        self.engine.max_sessions = self.sessions_per_replica
        return self

    @property
    def target_ongoing_requests(self) -> float:
        return max(self.sessions_per_replica * self.autoscaling.target_utilisation, 0.1)

    @property
    def graceful_shutdown_timeout_s(self) -> float:
        return math.ceil(self.engine.max_session_s + self.drain_margin_s)
