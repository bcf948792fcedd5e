"""The CLI answers --help everywhere, reports bad input without tracebacks; platform/ shadows nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from repo_paths import REPO_ROOT

PLEXRAY = [sys.executable, "-m", "plexray.cli"]


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def subcommands() -> list[list[str]]:
    from plexray.cli import build_parser

    found = []

    def walk(parser, prefix):
        for action in parser._actions:
            if action.__class__.__name__ == "_SubParsersAction":
                for name, sub in action.choices.items():
                    found.append(prefix + [name])
                    walk(sub, prefix + [name])

    walk(build_parser(), [])
    return found


@pytest.mark.parametrize("command", [[]] + subcommands(), ids=lambda c: " ".join(c) or "plexray")
def test_help_everywhere(command):
    result = run(PLEXRAY + command + ["--help"])
    assert result.returncode == 0, result.stderr
    assert "usage: plexray" in result.stdout


def test_bad_checkpoint_is_one_line_error(tmp_path):
    result = run(PLEXRAY + ["model", "inspect", str(tmp_path / "nope")])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "checkpoint directory not found" in result.stderr


def test_inspect_demo(demo_checkpoint):
    import json

    result = run(PLEXRAY + ["model", "inspect", str(demo_checkpoint)])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["family"] == "personaplex" and summary["dep_q"] == 16


PLATFORM_CHECK = "import platform; print(platform.system(), platform.python_version())"


def test_stdlib_platform_not_shadowed_from_repo_root():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    result = run([sys.executable, "-c", "import sys; sys.path.insert(0, ''); " + PLATFORM_CHECK], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Linux ")


def test_stdlib_platform_in_ray_worker_with_repo_working_dir(ray_cluster):
    ray = ray_cluster

    @ray.remote
    def check():
        import os
        import platform

        return platform.system(), os.path.isdir("platform/plexray")

    system, in_repo = ray.get(check.remote())  # the session cluster's working dir is the repo
    assert system == "Linux" and in_repo
