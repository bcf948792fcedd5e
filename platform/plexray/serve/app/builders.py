"""Serve application builders: `import_path` targets for Serve config files and `serve run`.

Arguments (a Serve config's `args`, or key=value on `serve run`):
  config    path of a plexray config YAML (relative to the working directory); optional
  settings  the plexray config inline, as a mapping (used instead of `config`: nothing to ship)
  set       overrides, a list of 'key=value' (or one string), as `plexray --set`
"""

from __future__ import annotations

import pydantic

from plexray.config import apply_overrides, describe_validation_error, load_config
from plexray.errors import ConfigError
from plexray.serve.app.deployments import ops_application, sessions_application, web_application
from plexray.settings import PlexrayConfig


def platform_config(args: dict) -> PlexrayConfig:
    unknown = sorted(set(args) - {"config", "settings", "set"})
    if unknown:
        raise ConfigError(f"application args: unknown {unknown}; expected config, settings, set")
    overrides = args.get("set") or []
    if isinstance(overrides, str):
        overrides = [overrides]
    if "settings" not in args:
        return load_config(PlexrayConfig, args.get("config"), overrides)
    try:
        return PlexrayConfig.model_validate(apply_overrides(dict(args["settings"]), overrides))
    except pydantic.ValidationError as exc:
        raise ConfigError(describe_validation_error("application args.settings", exc)) from None


def sessions_app(args: dict):
    """The conversations: PersonaPlex replicas behind /api/chat and /ws/voice/{persona}, and the web client's
    page at / (route prefix '/'). A persona naming a voice the checkpoint lacks fails the deploy (ConfigError)."""
    return sessions_application(platform_config(args))


def ops_app(args: dict):
    """Status and health on a light replica (route prefix '/voice'): /voice/status, /voice/healthz, /voice/readyz."""
    return ops_application(platform_config(args))


def web_app(args: dict):
    """The web client's files, dist.tgz's assets/, on a light replica (route prefix '/assets')."""
    return web_application(platform_config(args))
