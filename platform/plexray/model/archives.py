"""Extract a checkpoint's archive (voices.tgz, dist.tgz) once, beside it, safely under races."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from plexray.errors import CheckpointError


def extract_once(archive: Path, what: str) -> Path:
    """Extract `archive` into `<archive>.extracted/` unless already there; return that directory.

    Several processes (Serve replicas, Train workers) load the same checkpoint at once: each
    extracts into a private temporary directory and renames it into place. The rename is atomic
    and fails if another process's copy is already there, so no reader ever sees a half-written
    extraction. filter="data" refuses members that would land outside the target (absolute
    paths, '..', links out, devices). `what` names the archive in messages ("voices archive").
    """
    target = archive.with_name(archive.name + ".extracted")
    if target.is_dir():
        return target
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}-", dir=archive.parent))
    except OSError as exc:
        raise CheckpointError(f"{archive}: cannot extract the {what} beside it: {exc}") from None
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        os.rename(staging, target)
    except (tarfile.TarError, OSError) as exc:
        if not target.is_dir():  # the rename fails only because another process got there first
            raise CheckpointError(f"{archive}: cannot extract the {what}: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
