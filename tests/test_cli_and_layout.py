"""The CLI answers --help everywhere, reports bad input without tracebacks; platform/ shadows nothing."""

from __future__ import annotations

import argparse
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
def test_help_everywhere_describes_the_command_and_each_argument(command, capsys):
    from plexray.cli import build_parser

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(command + ["--help"])
    assert exit.value.code == 0
    printed = capsys.readouterr().out
    usage, description = printed.split("\n\n")[:2]
    assert usage.startswith("usage: plexray") and len(description.split()) >= 3, printed
    parser = build_parser()
    for name in command:  # down to this command's own parser
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    undocumented = [action.dest for action in parser._actions
                    if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert not undocumented, f"arguments without help: {undocumented}"


def test_the_top_level_help_is_for_users_and_set_examples_fit_the_command(capsys):
    from plexray.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "plexray demo --config configs/demo.yaml" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["data", "generate", "--help"])
    assert "--set data.max_conversations=10" in " ".join(capsys.readouterr().out.split())


def test_missing_checkpoints_and_datasets_are_refused_before_a_cluster_starts(tmp_path, capsys, monkeypatch):
    import plexray.train.cli
    from plexray.cli import main

    def no_cluster():
        raise AssertionError("a Ray cluster was started before the input was checked")

    monkeypatch.setattr(plexray.train.cli, "_connect_ray", no_cluster)
    nope = str(tmp_path / "nope")
    assert main(["evaluate", "behaviour", "--checkpoint", nope, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"plexray evaluate: error: checkpoint {nope}: no such directory " \
                                              "(a checkpoint is a directory, 'demo' or hf://REPO)"
    assert main(["evaluate", "loss", "--checkpoint", nope, "--dataset", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"plexray evaluate: error: checkpoint {nope}: no such directory"
    assert main(["evaluate", "loss", "--dataset", nope]) == 2
    assert f"dataset {nope}: no such directory" in capsys.readouterr().err


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
