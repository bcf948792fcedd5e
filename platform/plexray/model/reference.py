"""Model references: `hf://owner/repo[@revision]`, a local checkpoint directory, or `demo`.

Hub files come through huggingface_hub, so HF_TOKEN, HF_HOME / cache_dir and HF_HUB_OFFLINE
behave as everywhere else. The file names are those of the real repos.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from plexray.errors import CheckpointError
from plexray.model.archives import extract_once
from plexray.model.demo import ensure_demo_checkpoint
from plexray.model.layout import (CONFIG_FILE, LM_FILE, METADATA_FILE, MIMI_FILE, TOKENIZER_FILE, VOICES_DIR,
                                  VOICES_FILE)

DEMO_REF = "demo"
WEB_CLIENT_FILE = "dist.tgz"  # NVIDIA's web client, built by Vite: dist/index.html and dist/assets/
WEB_CLIENT_DIR = "dist"


@dataclasses.dataclass(frozen=True)
class CheckpointFiles:
    """Where a checkpoint's files are on local disk, once resolved."""

    source: str  # the reference as the user wrote it, for messages
    lm: Path
    mimi: Path
    tokenizer: Path
    config: Path | None
    voices: Path | None  # voices.tgz or a voices/ directory
    hub_repo: str | None = None
    web_client: Path | None = None  # dist.tgz, the built web client NVIDIA's server serves at /
    metadata: Path | None = None  # plexray.json, which only checkpoints written by plexray have


def default_demo_dir() -> Path:
    """Where the built-in demo checkpoint lives: $PLEXRAY_DEMO_DIR or ~/.cache/plexray/demo-checkpoint."""
    env = os.environ.get("PLEXRAY_DEMO_DIR")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "plexray" / "demo-checkpoint"


def parse_hub_ref(ref: str) -> tuple[str, str | None]:
    """`hf://owner/repo[@revision]` -> (repo_id, revision)."""
    body = ref.removeprefix("hf://")
    repo, _, revision = body.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"{ref}: expected hf://owner/repo[@revision]")
    return repo, revision or None


def resolve(ref: str, cache_dir: str | None = None) -> CheckpointFiles:
    if ref.startswith("hf://"):
        return _resolve_hub(ref, cache_dir)
    if ref == DEMO_REF:
        return _resolve_local(str(ensure_demo_checkpoint(default_demo_dir())))
    return _resolve_local(ref)


def _resolve_local(ref: str) -> CheckpointFiles:
    root = Path(ref).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"{ref}: checkpoint directory not found")
    for required in (LM_FILE, MIMI_FILE, TOKENIZER_FILE):
        if not (root / required).is_file():
            raise CheckpointError(f"{root / required}: missing checkpoint file")
    voices = root / VOICES_FILE
    if not voices.is_file():
        voices = root / VOICES_DIR
    return CheckpointFiles(
        source=ref,
        lm=root / LM_FILE,
        mimi=root / MIMI_FILE,
        tokenizer=root / TOKENIZER_FILE,
        config=root / CONFIG_FILE if (root / CONFIG_FILE).is_file() else None,
        voices=voices if voices.exists() else None,
        web_client=_local_web_client(root),
        metadata=root / METADATA_FILE if (root / METADATA_FILE).is_file() else None,
    )


def _local_web_client(root: Path) -> Path | None:
    archive = root / WEB_CLIENT_FILE
    return archive if archive.is_file() else None


def _resolve_hub(ref: str, cache_dir: str | None) -> CheckpointFiles:
    repo, _ = parse_hub_ref(ref)

    def fetch(filename: str, required: bool) -> Path | None:
        return _fetch_hub_file(ref, filename, required, cache_dir)

    lm, mimi, tokenizer = (fetch(name, required=True) for name in (LM_FILE, MIMI_FILE, TOKENIZER_FILE))
    assert lm and mimi and tokenizer
    return CheckpointFiles(
        source=ref, lm=lm, mimi=mimi, tokenizer=tokenizer,
        config=fetch(CONFIG_FILE, required=False), voices=fetch(VOICES_FILE, required=False),
        hub_repo=repo, web_client=fetch(WEB_CLIENT_FILE, required=False),
        metadata=fetch(METADATA_FILE, required=False),
    )


def _fetch_hub_file(ref: str, filename: str, required: bool, cache_dir: str | None) -> Path | None:
    """One file of a hub repo, downloaded or from the cache; None if it is optional and absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = parse_hub_ref(ref)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache_dir))
    except GatedRepoError:
        raise CheckpointError(
            f"{ref}: the repo is gated; accept its licence on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{ref}: repository not found (or private without HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{ref}: revision {revision!r} not found") from None
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError: catch it first)
        # Offline (HF_HUB_OFFLINE=1) or unreachable hub, and the file is not in the cache.
        if required:
            raise CheckpointError(
                f"{ref}: cannot download {filename}: the hub is unreachable or offline mode is on, "
                f"and the file is not in the cache ({cache_dir or 'HF_HOME default'})") from None
        return None
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"{ref}: the repo has no file {filename}") from None
        return None


def resolve_web_client(ref: str, cache_dir: str | None = None) -> Path | None:
    """The checkpoint's dist.tgz, or None; unlike `resolve`, fetches nothing else.

    For processes that serve only the web client: they must not download a 16 GB model to find it.
    """
    if ref.startswith("hf://"):
        return _fetch_hub_file(ref, WEB_CLIENT_FILE, required=False, cache_dir=cache_dir)
    root = default_demo_dir() if ref == DEMO_REF else Path(ref).expanduser()
    return _local_web_client(root)


def resolve_voices(ref: str, cache_dir: str | None = None) -> Path | None:
    """The checkpoint's voices (voices.tgz or a voices/ directory), or None; of a hub checkpoint, fetches
    nothing else (checking a deployment's personas must not download a 16 GB model)."""
    if ref.startswith("hf://"):
        return _fetch_hub_file(ref, VOICES_FILE, required=False, cache_dir=cache_dir)
    return resolve(ref).voices  # a local checkpoint: its files are only located, not read


def extract_web_client(archive: Path) -> Path:
    """Extract dist.tgz once, beside it, and return its `dist/` directory (index.html, assets/).

    Every replica on a node calls this at start: `extract_once` makes that safe under races.
    """
    target = extract_once(archive, "web client")
    bundle = target / WEB_CLIENT_DIR
    if not (bundle / "index.html").is_file():
        raise CheckpointError(f"{archive}: not a web client bundle: expected {WEB_CLIENT_DIR}/index.html in it")
    return bundle
