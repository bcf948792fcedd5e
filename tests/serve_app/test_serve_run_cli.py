"""`plexray serve run` for a person at a terminal (issue 25): its banner names every endpoint, a port
already in use is one line before any cluster starts, and the session ledger's access lines (one per
replica report, every 2 s) stay off stderr. The by-hand check of a whole run is in the issue's report."""

from __future__ import annotations

import io
import logging
import socket

import pytest

from plexray.cli import main
from plexray.serve.app.ingress import status_app
from plexray.serve.cli import banner
from plexray.settings import PlexrayConfig


def test_the_banner_names_every_endpoint_of_the_three_applications():
    config = PlexrayConfig()
    text = banner(config, "127.0.0.1", 8123)
    ops_routes = [route.path for route in status_app(config.serve, ledger=None).routes]
    assert set(ops_routes) >= {"/status", "/healthz", "/readyz", "/talk"}
    for path in ["/", "/api/chat", "/ws/voice/{persona}", "/assets/", *(f"/voice{path}" for path in ops_routes)]:
        assert f"127.0.0.1:8123{path}" in text, path
    assert "personas: assistant" in text


def test_a_port_in_use_is_one_line_naming_it_before_ray_starts(capsys, monkeypatch):
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started_before = ray.is_initialized()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "run", "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert ray.is_initialized() == started_before  # no cluster was started for it


@pytest.fixture
def serve_logger_restored():
    """Serve's logger as it was: configuring it (as a replica does) clears its handlers."""
    logger = logging.getLogger("ray.serve")
    state = (list(logger.handlers), logger.propagate, logger.level)
    yield logger
    logger.handlers[:], logger.propagate, logger.level = state[0], state[1], state[2]


@pytest.mark.parametrize("access_log", [False, True])
def test_a_deployment_with_access_logs_off_writes_none_to_stderr(serve_logger_restored, access_log):
    from ray.serve._private import logging_utils
    from ray.serve.schema import LoggingConfig

    from plexray.serve.serve_logging import honour_access_log_setting

    honour_access_log_setting()
    logging_utils.configure_component_logger(component_name="SessionLedger", component_id="r1",
                                             logging_config=LoggingConfig(enable_access_log=access_log),
                                             stream_handler_only=True)
    stderr = io.StringIO()
    [handler] = serve_logger_restored.handlers
    handler.setStream(stderr)
    serve_logger_restored.info("CALL report OK 0.4ms", extra={"serve_access_log": True})
    serve_logger_restored.info("replica r1: the ledger's own line")
    lines = stderr.getvalue()
    assert "the ledger's own line" in lines
    assert ("CALL report OK" in lines) == access_log


def test_serve_config_writes_every_value_out_and_runs_the_logging_fix_in_the_replicas(capsys):
    import yaml

    assert main(["serve", "config", "--set", "serve.sessions_per_replica=3"]) == 0
    text = capsys.readouterr().out
    assert "&id" not in text and "*id" not in text  # no YAML anchors in a file people edit
    applications = yaml.safe_load(text)["applications"]
    assert [app["runtime_env"]["worker_process_setup_hook"] for app in applications] == \
        ["plexray.serve.serve_logging.honour_access_log_setting"] * 3
    assert {app["args"]["settings"]["serve"]["sessions_per_replica"] for app in applications} == {3}
