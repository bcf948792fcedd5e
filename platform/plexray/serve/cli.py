"""`plexray serve ...`: run the PersonaPlex Serve applications, or write their Serve config file."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import time

import yaml

from plexray.errors import PlexrayError
from plexray.settings import add_config_arguments, load_platform_config


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve PersonaPlex conversations with Ray Serve")
    commands = serve.add_subparsers(dest="serve_command", required=True, metavar="SUBCOMMAND")

    run = commands.add_parser("run", help="start the three applications on a Ray cluster (or a local one) and wait")
    add_config_arguments(run)
    run.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a new local one)")
    run.add_argument("--host", default="127.0.0.1", help="HTTP host of Serve's proxy")
    run.add_argument("--port", type=int, default=8000, help="HTTP port of Serve's proxy")
    run.set_defaults(handler=_run)

    config = commands.add_parser("config", help="print a Serve config YAML (for `serve deploy`) of this config")
    add_config_arguments(config)
    config.add_argument("--host", default="0.0.0.0", help="HTTP host the proxy listens on (http_options.host)")
    config.add_argument("--port", type=int, default=8000, help="HTTP port of the proxy (http_options.port)")
    config.set_defaults(handler=_config)


def serve_config_document(platform_config, host: str, port: int) -> dict:
    """The three applications with the plexray config inline; http_options.request_timeout_s stays unset.
    Each application's runtime_env runs serve_logging's fix in its replicas (no access line per ledger call)."""
    from plexray.serve import serve_logging
    from plexray.serve.app.deployments import portable

    args = {"settings": portable(platform_config)}
    runtime_env = serve_logging.runtime_env()
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            {"name": platform_config.serve.app_name, "route_prefix": "/",
             "import_path": "plexray.serve.app.builders:sessions_app", "args": args,
             "runtime_env": runtime_env},
            {"name": f"{platform_config.serve.app_name}-ops", "route_prefix": "/voice",
             "import_path": "plexray.serve.app.builders:ops_app", "args": args,
             "runtime_env": runtime_env},
            {"name": f"{platform_config.serve.app_name}-web", "route_prefix": "/assets",
             "import_path": "plexray.serve.app.builders:web_app", "args": args,
             "runtime_env": runtime_env},
        ],
    }


class _WrittenOut(yaml.SafeDumper):
    """Every value written out where it is used: a file people edit gets no YAML anchors (`&id001`)."""

    def ignore_aliases(self, data) -> bool:
        return True


def _config(args: argparse.Namespace) -> int:
    document = serve_config_document(load_platform_config(args), args.host, args.port)
    print(yaml.dump(document, Dumper=_WrittenOut, sort_keys=False), end="")
    return 0


def banner(platform_config, host: str, port: int) -> str:
    """What `serve run` prints once the applications are up: every endpoint of the three applications."""
    base = f"{host}:{port}"
    personas = ", ".join(sorted(platform_config.serve.personas))
    endpoints = [
        (f"http://{base}/", "NVIDIA's web client (the checkpoint's dist.tgz), else a redirect to the talk page"),
        (f"http://{base}/voice/talk", "plexray's talk page (a browser; the microphone needs https or localhost)"),
        (f"ws://{base}/api/chat", "binary protocol (NVIDIA's web client), default persona"),
        (f"ws://{base}/ws/voice/{{persona}}", f"JSON protocol; personas: {personas}"),
        (f"http://{base}/voice/status", "personas, capacity, live sessions and waiting callers per replica"),
        (f"http://{base}/voice/healthz", "200 while the applications are up"),
        (f"http://{base}/voice/readyz", "200 while the fleet has a free session slot, else 503"),
        (f"http://{base}/assets/...", "the web client's files"),
    ]
    width = max(len(url) for url, _ in endpoints) + 2
    lines = [f"  {url:<{width}}{what}" for url, what in endpoints]
    return "\n".join(["PersonaPlex is being served:", *lines, "Ctrl-C (or SIGTERM) stops serving."])


def check_port_free(host: str, port: int) -> None:
    """Raise a one-line PlexrayError when this machine cannot listen on host:port (Serve's proxy would
    fail there after the cluster started, with a page of tracebacks from its actors)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy does: a closing port is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PlexrayError(f"port {port} on {host} is already in use (another server, or an earlier "
                                   f"`plexray serve run`); stop it or choose another with --port") from None
            raise PlexrayError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _stop_serving(signum, frame) -> None:
    """SIGTERM (a service manager stopping `serve run`) ends it as Ctrl-C does: Serve shut down, exit 0."""
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from plexray.serve import serve_logging
    from plexray.serve.app.personas import check_voices
    from plexray.serve.proxy_hook import enable_in_this_environment

    config = load_platform_config(args)
    check_voices(config.serve.personas, config.model)  # before any cluster starts, as the port
    if args.address is None and not os.environ.get("RAY_ADDRESS"):  # a local cluster: its proxy listens here
        check_port_free(args.host, args.port)
    # Serve's default proxy options, read when ray.serve is imported (just below): each serve.run compares its
    # defaults with the running proxy's, and warned three times that a port other than 8000 differs.
    os.environ["RAY_SERVE_DEFAULT_HTTP_HOST"], os.environ["RAY_SERVE_DEFAULT_HTTP_PORT"] = args.host, str(args.port)
    import ray
    from ray import serve

    from plexray.serve.app.deployments import ops_application, sessions_application, web_application

    enable_in_this_environment()  # for the proxies of a cluster this starts
    ray.init(address=args.address, runtime_env=serve_logging.runtime_env())  # the replicas inherit it
    signal.signal(signal.SIGTERM, _stop_serving)  # after ray.init, whose handler dumps a stack trace on SIGTERM
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        name = config.serve.app_name
        serve.run(sessions_application(config), name=name, route_prefix="/")
        serve.run(ops_application(config), name=f"{name}-ops", route_prefix="/voice")
        serve.run(web_application(config), name=f"{name}-web", route_prefix="/assets")
        print(banner(config, args.host, args.port), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
