"""The Ray Serve application: WebSocket ingress for PersonaPlex conversations on engine replicas.

Modules, one idea each:
  binary_protocol  the PersonaPlex/moshi binary messages of /api/chat (kinds 0x00-0x06, Opus audio)
  json_protocol    the JSON messages of /ws/voice/{persona} (base64 PCM, capabilities)
  personas         named personas + per-session overrides -> engine SessionSettings
  security         API keys, allowed origins, client addresses, secret-free logging
  admission        the fleet-wide ledger: per-key session limits, per-address rate limit, replica status
  conversation     one WebSocket <-> one engine Session: the receive and send loops
  ingress          the Starlette apps (built by functions: module-level apps do not pickle)
  routing          the request router that sends a new session to the least loaded replica
  telemetry        Ray metrics (live sessions, rejections, tick time, dropped frames)
  deployments      the Serve deployments and applications, their options derived from ServeConfig
"""
