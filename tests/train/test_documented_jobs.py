"""docs/cluster.md's `ray job submit` commands, run as written from a copy of the repo against a local
cluster: their outputs must be where the docs say, outside Ray's temporary copy of the working dir."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO_ROOT
from test_job_submit import job_cluster  # noqa: F401  (the fixture: a head node with the job API)

VENV_BIN = Path(sys.executable).parent
DOCUMENTED_ADDRESS = "http://127.0.0.1:8265"
# Tiny data and steps, added to the documented commands the way the docs say (--set KEY=VALUE).
TINY = {
    "jobs/generate_data.py": ["data.max_conversations=2", "data.dialogue.min_turns=2", "data.dialogue.max_turns=2"],
    "jobs/train.py": ["train.num_workers=1", "train.max_steps=2", "train.eval_every=2",
                      "train.validation_fraction=0.5", "train.batch_size=1"],
}


def documented_commands() -> list[str]:
    """The shell lines of cluster.md's job block, minus `ray job logs` (it needs a job id)."""
    text = (REPO_ROOT / "docs" / "cluster.md").read_text()
    block = re.search(r"Run from the repo root:\s*```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("ray job logs")]


def shortened(line: str, address: str) -> str:
    line = line.replace(DOCUMENTED_ADDRESS, address)
    for job, overrides in TINY.items():
        if line.startswith("ray job submit") and f" {job} " in line:
            line += "".join(f" --set {override}" for override in overrides)
    return line


def copy_of_the_repo(target: Path) -> Path:
    """The files a fresh checkout has (tracked and not ignored), without .venv/, artifacts/, .git/."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=REPO_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)
    return target


def test_the_documented_jobs_run_as_written(job_cluster, tmp_path):  # noqa: F811
    client, _ = job_cluster
    repo = copy_of_the_repo(tmp_path / "checkout")
    script = "\n".join(["set -euo pipefail", *(shortened(line, client.get_address()) for line in documented_commands())])
    env = os.environ | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{script}\n---\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    store = repo / "artifacts" / "cluster"  # the docs' STORE=$PWD/artifacts/cluster
    assert json.loads((store / "data" / "manifest.json").read_text())["written"] >= 1
    summary = json.loads((store / "train" / "demo" / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert (store / "merged" / "config.json").is_file()


def test_a_job_refuses_a_relative_output_path():
    result = subprocess.run([sys.executable, "jobs/train.py", "--config", "configs/demo.yaml"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "train.output_dir = artifacts/demo/train" in result.stderr and "docs/cluster.md" in result.stderr
