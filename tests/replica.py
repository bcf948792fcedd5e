"""A replica of the real `nvidia/personaplex-7b-v1` repository at toy size, and the HF cache layout.

The files and their formats are the real repo's: `config.json` without architecture fields,
`model.safetensors` and the Mimi file with moshi 0.1's tensor names (bfloat16), the sentencepiece
tokenizer, `voices.tgz` holding `voices/NATF0.pt` as NVIDIA's own code wrote it (the golden
checkpoint's, see scripts/nvidia_parity/), and optionally `dist.tgz` (a web-client bundle). Only
the sizes differ, so a loader must be told the toy architecture (`REPLICA_ARCHITECTURE`), as
plexray itself supplies the released one for the real repo.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from repo_paths import REPO_ROOT

GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "personaplex-toy"
NVIDIA_REPO = "nvidia/personaplex-7b-v1"
# What the real config.json is about: files and provenance, no architecture.
REPLICA_CONFIG = {"model_type": "personaplex", "library_name": "moshi"}


def _golden_json(name: str) -> dict:
    return json.loads((GOLDEN_DIR / name).read_text())


REPLICA_ARCHITECTURE = {
    "lm_config": {k: v for k, v in _golden_json("config.json").items() if k != "model_type"},
    "mimi_config": _golden_json("plexray.json")["mimi_config"],
}


def write_personaplex_replica(directory: Path, web_client: Path | None = None) -> Path:
    """Write the replica into `directory`; `web_client` (a folder with index.html) becomes dist.tgz."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "tokenizer-e351c8d8-checkpoint125.safetensors", "tokenizer_spm_32k_3.model"):
        shutil.copy(GOLDEN_DIR / name, directory / name)
    (directory / "config.json").write_text(json.dumps(REPLICA_CONFIG))
    with tarfile.open(directory / "voices.tgz", "w:gz") as tar:
        tar.add(GOLDEN_DIR / "voices" / "NATF0.pt", arcname="voices/NATF0.pt")
    if web_client is not None:
        with tarfile.open(directory / "dist.tgz", "w:gz") as tar:
            tar.add(web_client, arcname="dist")
    return directory


def make_hub_cache(cache_dir: Path, repo: str, checkpoint: Path, files: list[str] | None = None) -> None:
    """Lay a checkpoint out exactly as huggingface_hub caches a downloaded repo."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache_dir / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    for name in files or [p.name for p in checkpoint.iterdir() if p.is_file()]:
        shutil.copy(checkpoint / name, snapshot / name)
