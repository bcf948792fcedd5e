"""Where a job reads and writes: shared by the entry points in jobs/ (not a job itself).

Under `ray job submit --working-dir .` a job runs inside Ray's unpacked copy of the working dir, so a
relative path resolves there: the job's data, runs and merged models would land in Ray's temp
directory, where nobody looks and which Ray deletes with the package. The jobs therefore take only
absolute paths or URIs for what one job writes and another reads; the `plexray` command, run where
you are, keeps accepting relative ones. docs/cluster.md shows the commands with `$PWD/...` (a local
cluster) or a path every node mounts (a cluster of several machines).
"""

from __future__ import annotations

import argparse
import sys
import typing as tp

from plexray.config import load_config
from plexray.settings import PlexrayConfig, add_config_arguments


def platform_config(argv: tp.Sequence[str]) -> PlexrayConfig:
    """The config that the job's --config and --set arguments name (other arguments are the command's)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_config_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    return load_config(PlexrayConfig, args.config, args.overrides)


def require_absolute(job: str, paths: dict[str, str | None]) -> None:
    """Exit with an error naming every relative path in `paths` (name -> value; None = not given)."""
    relative = {name: value for name, value in paths.items() if value and not _is_absolute(str(value))}
    if relative:
        listed = "\n".join(f"  {name} = {value}" for name, value in relative.items())
        sys.exit(f"{job}: error: relative path(s):\n{listed}\n"
                 "A job runs in Ray's temporary copy of the working dir, so its files would vanish with it. "
                 "Give an absolute path (--set KEY=$PWD/... on a local cluster, a path every node mounts on "
                 "several machines) or a URI; see docs/cluster.md.")


def _is_absolute(path: str) -> bool:
    return path.startswith("/") or "://" in path
