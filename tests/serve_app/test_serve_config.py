"""The serve config and what it derives: Serve options, Serve config files, the cluster launcher config."""

from __future__ import annotations

import copy

import pytest
import yaml

from serve_helpers import REPO_ROOT
from plexray.config import load_config
from plexray.errors import ConfigError
from plexray.serve.app.builders import platform_config
from plexray.serve.app.deployments import deployment_options
from plexray.serve.proxy_hook import PROXY_CALLBACK, PROXY_CALLBACK_VARIABLE
from plexray.settings import PlexrayConfig

SERVE_CONFIGS = sorted((REPO_ROOT / "serve_apps").glob("serve_config.*.yaml"))


def test_sessions_per_replica_sets_engine_slots_and_serve_limits():
    config = load_config(PlexrayConfig, overrides=["serve.sessions_per_replica=6", "serve.reject_headroom=2",
                                                   "serve.autoscaling.target_utilisation=0.5",
                                                   "serve.engine.max_session_s=100", "serve.drain_margin_s=20",
                                                   "serve.waiting_line.max_callers_per_replica=3"])
    options = deployment_options(config)
    assert config.serve.engine.max_sessions == 6
    assert options["max_ongoing_requests"] == 6 + 3 + 2  # sessions, waiting callers, 'busy' answers
    assert options["autoscaling_config"]["target_ongoing_requests"] == 3
    assert options["graceful_shutdown_timeout_s"] >= 100  # draining outlasts the longest conversation


def test_conflicting_engine_slots_and_unknown_settings_are_config_errors():
    with pytest.raises(ConfigError, match="set only sessions_per_replica"):
        load_config(PlexrayConfig, overrides=["serve.sessions_per_replica=2", "serve.engine.max_sessions=3"])
    with pytest.raises(ConfigError, match="unknown sampling settings"):
        load_config(PlexrayConfig, overrides=["serve.personas={a: {sampling: {temperature: 1}}}",
                                              "serve.default_persona=a"])
    with pytest.raises(ConfigError, match="default_persona 'nobody'"):
        load_config(PlexrayConfig, overrides=["serve.default_persona=nobody"])
    with pytest.raises(ConfigError, match="min_replicas 3 > max_replicas 2"):
        load_config(PlexrayConfig, overrides=["serve.autoscaling={min_replicas: 3, max_replicas: 2}"])
    with pytest.raises(ConfigError, match="unknown"):
        platform_config({"confg": "x.yaml"})


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_serve_config_files_pass_serves_schema_and_build(path):
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.parse_obj(raw)
    assert schema.http_options.request_timeout_s is None  # would cut live conversations
    apps = {app.name: app for app in schema.applications}
    assert apps["plexray"].route_prefix == "/" and apps["plexray-ops"].route_prefix == "/voice"
    config = platform_config(apps["plexray"].args)
    options = deployment_options(config)
    assert options["graceful_shutdown_timeout_s"] >= config.serve.engine.max_session_s
    assert options["max_ongoing_requests"] > config.serve.sessions_per_replica


def test_gpu_serve_config_asks_for_gpus():
    config = platform_config(yaml.safe_load((REPO_ROOT / "serve_apps/serve_config.gpu.yaml").read_text())
                             ["applications"][0]["args"])
    assert deployment_options(config)["ray_actor_options"]["num_gpus"] == 1
    assert config.model.device == "cuda"


def test_cluster_yaml_passes_the_cluster_launchers_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(raw)))
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["node_config"]["InstanceType"].startswith("m")  # CPU head
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] >= 1 and gpu["max_workers"] >= gpu["min_workers"]
    assert any("pip install" in command and "plexray" in command for command in raw["setup_commands"])
    for command in raw["head_start_ray_commands"][1:] + raw["worker_start_ray_commands"][1:]:
        assert f"{PROXY_CALLBACK_VARIABLE}={PROXY_CALLBACK} ray start" in command  # every node runs a proxy
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "one"
    with pytest.raises(Exception, match="one"):
        validate_config(prepare_config(broken))


def test_kuberay_manifest_carries_the_gpu_serve_config():
    manifest = yaml.safe_load((REPO_ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    assert manifest["kind"] == "RayService"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == \
        yaml.safe_load((REPO_ROOT / "serve_apps/serve_config.gpu.yaml").read_text())
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    for container in (head["template"]["spec"]["containers"][0], workers["template"]["spec"]["containers"][0]):
        assert {"name": PROXY_CALLBACK_VARIABLE, "value": PROXY_CALLBACK} in container["env"]


def test_serve_config_command_writes_a_deployable_file(capsys):
    from ray.serve.schema import ServeDeploySchema

    from plexray.cli import main

    assert main(["serve", "config", "--set", "serve.sessions_per_replica=3", "--port", "9000"]) == 0
    schema = ServeDeploySchema.parse_obj(yaml.safe_load(capsys.readouterr().out))
    assert schema.http_options.port == 9000 and schema.http_options.request_timeout_s is None
    assert platform_config(schema.applications[0].args).serve.sessions_per_replica == 3
    assert main(["serve", "config", "--set", "serve.sessions_per_replica=0"]) == 2
    assert "sessions_per_replica" in capsys.readouterr().err


def test_repo_builder_for_serve_run_builds_both_applications():
    import importlib.util

    from ray.serve import Application

    spec = importlib.util.spec_from_file_location("personaplex_app", REPO_ROOT / "serve_apps/personaplex.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.sessions_app({}), Application) and isinstance(module.ops_app({}), Application)
