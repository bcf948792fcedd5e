"""`plexray serve ...`: run the PersonaPlex Serve applications, or write their Serve config file."""

from __future__ import annotations

import argparse
import time

import yaml

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
    """The three applications with the plexray config inline; http_options.request_timeout_s stays unset."""
    from plexray.serve.app.deployments import portable

    args = {"settings": portable(platform_config)}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": port},
        "applications": [
            {"name": platform_config.serve.app_name, "route_prefix": "/",
             "import_path": "plexray.serve.app.builders:sessions_app", "args": args},
            {"name": f"{platform_config.serve.app_name}-ops", "route_prefix": "/voice",
             "import_path": "plexray.serve.app.builders:ops_app", "args": args},
            {"name": f"{platform_config.serve.app_name}-web", "route_prefix": "/assets",
             "import_path": "plexray.serve.app.builders:web_app", "args": args},
        ],
    }


def _config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(serve_config_document(load_platform_config(args), args.host, args.port), sort_keys=False),
          end="")
    return 0


def _run(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from plexray.serve.app.deployments import ops_application, sessions_application, web_application
    from plexray.serve.proxy_hook import enable_in_this_environment

    config = load_platform_config(args)
    enable_in_this_environment()  # for the proxies of a cluster this starts
    ray.init(address=args.address)
    serve.start(http_options={"host": args.host, "port": args.port})
    name = config.serve.app_name
    serve.run(sessions_application(config), name=name, route_prefix="/")
    serve.run(ops_application(config), name=f"{name}-ops", route_prefix="/voice")
    serve.run(web_application(config), name=f"{name}-web", route_prefix="/assets")
    base = f"{args.host}:{args.port}"
    print(f"PersonaPlex is being served:\n"
          f"  http://{base}/                    NVIDIA's web client (the checkpoint's dist.tgz) or the talk page\n"
          f"  ws://{base}/api/chat              binary protocol (NVIDIA's web client)\n"
          f"  ws://{base}/ws/voice/{{persona}}    JSON protocol; personas: {', '.join(sorted(config.serve.personas))}\n"
          f"  http://{base}/voice/status        capacity and live sessions per replica\n"
          f"Ctrl-C stops serving.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0
