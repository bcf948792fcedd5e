"""The docs name only what exists (issue 25): metrics as Prometheus exports them, config keys of the
pydantic config, `plexray` commands the real parser takes.

Metric names are read from the code that defines them (serve/app/telemetry.py) with Prometheus' naming:
Ray prefixes `ray_`; a counter is exported as `NAME_total`; a histogram as `NAME_bucket`, `NAME_sum`
and `NAME_count` (its family, `NAME`, names it in prose). A gauge keeps its name. docs/operations.md's
alert example once named counters without `_total` and matched nothing.
"""

from __future__ import annotations

import ast
import re
import shlex
import types
import typing as tp

import pydantic
import pytest

from plexray.cli import build_parser
from plexray.serve.config import PersonaConfig
from plexray.settings import PlexrayConfig
from repo_paths import REPO_ROOT

DOCS = sorted([*REPO_ROOT.glob("docs/*.md"), REPO_ROOT / "README.md", REPO_ROOT / "serve_apps" / "README.md"])
METRIC_MODULES = [REPO_ROOT / "platform" / "plexray" / "serve" / "app" / "telemetry.py"]
SUFFIXES = {"Gauge": [""], "Counter": ["_total"], "Histogram": ["", "_bucket", "_sum", "_count"]}

METRIC = re.compile(r"(?<![\w./-])(?:ray_)?plexray_[a-z0-9_]+")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
SECTIONS = "model|data|train|serve|knowledge|evaluation"  # PlexrayConfig's fields
CONFIG_KEY = re.compile(rf"^(?:--set |-s )?((?:{SECTIONS})\.[a-z0-9_.]+)(?:[=:].*)?$")
SET_KEY = re.compile(rf"--set[ =]((?:{SECTIONS})\.[a-z0-9_.]+)=")
FILE_SUFFIXES = {"safetensors", "json", "jsonl", "yaml", "yml", "md", "py", "pt", "tgz", "wav", "html", "txt", "png"}
COMMAND_START = re.compile(r"^(?:\$ )?(?:flock \S+ )?(?:\.venv/bin/)?plexray ")


def exported_metric_names() -> set[str]:
    """Every series name plexray's metrics appear under on Ray's Prometheus endpoint."""
    names = set()
    for module in METRIC_MODULES:
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SUFFIXES
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.update(f"ray_{node.args[0].value}{suffix}" for suffix in SUFFIXES[node.func.attr])
    return names


def doc_lines() -> tp.Iterator[tuple[str, str, bool]]:
    """(where, line, in a code block) for every line of the docs."""
    for path in DOCS:
        fenced = False
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            yield f"{path.relative_to(REPO_ROOT)}:{number}", line, fenced or line.startswith("    ")


def test_every_metric_the_docs_name_is_exported():
    exported = exported_metric_names()
    assert "ray_plexray_sessions_opened_total" in exported and "ray_plexray_wait_seconds_bucket" in exported
    wrong = [f"{where}: {name}" for where, line, _ in doc_lines() for name in METRIC.findall(line)
             if name not in exported]
    assert not wrong, "not exported under these names (exported: " + ", ".join(sorted(exported)) + "):\n" + \
        "\n".join(wrong)


def config_key_exists(key: str) -> bool:
    """Whether a dotted key is a field of the config, or of a persona (prose names a persona's own keys
    as "the persona's `knowledge.query`"). A mapping's key is any name: serve.personas.NAME.voice."""
    return any(key_of(root, key) for root in (PlexrayConfig, PersonaConfig))


def key_of(root: type[pydantic.BaseModel], key: str) -> bool:
    annotation: tp.Any = root
    parts = key.rstrip(".").split(".")
    while parts:
        origin = tp.get_origin(annotation)
        if origin in (dict, tp.Mapping) or (origin is None and annotation is dict):
            parts.pop(0)
            annotation = tp.get_args(annotation)[1] if tp.get_args(annotation) else tp.Any
            continue
        if origin in (tp.Union, types.UnionType):
            annotation = next(arg for arg in tp.get_args(annotation) if arg is not type(None))
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel)):
            return annotation is tp.Any  # a key below a plain value: only free-form mappings have those
        field = annotation.model_fields.get(parts.pop(0))
        if field is None:
            return False
        annotation = field.annotation
    return True


def test_every_config_key_the_docs_name_exists():
    keys = []
    for where, line, _ in doc_lines():
        for span in INLINE_CODE.findall(line):
            match = CONFIG_KEY.match(span.strip())
            if match:
                keys.append((where, match.group(1)))
        keys.extend((where, key) for key in SET_KEY.findall(line))
    keys = [(where, key) for where, key in keys if key.rsplit(".", 1)[-1] not in FILE_SUFFIXES]  # model.safetensors
    assert len(keys) > 20  # the docs do name keys: the patterns still find them
    wrong = [f"{where}: {key}" for where, key in keys if not config_key_exists(key)]
    assert not wrong, "not a key of PlexrayConfig:\n" + "\n".join(wrong)


def doc_commands() -> tp.Iterator[tuple[str, list[str], bool]]:
    """(where, argv after `plexray`, whole command) of each command the docs show: whole lines of code
    blocks, and inline code spans (a span may name a command without its arguments: `plexray train`;
    `a\\|b` in a table is one command each)."""
    for where, line, in_block in doc_lines():
        spans = [line.strip()] if in_block else INLINE_CODE.findall(line)
        for span in spans:
            span = span.strip()
            if not COMMAND_START.match(span):
                continue
            text = COMMAND_START.sub("", span).split("  #")[0].split(" # ")[0].split(" > ")[0].split(" | ")[0]
            words = [word for word in shlex.split(text) if word != "..."]  # shlex leaves `a\|b` as a|b
            for alternative in words[-1].split("|") if words else []:
                yield where, [*words[:-1], alternative], in_block


def test_every_plexray_command_the_docs_show_parses():
    parser = build_parser()
    commands = list(doc_commands())
    assert len(commands) > 20
    wrong = []
    for where, argv, whole in commands:
        try:
            if whole:
                parser.parse_args(argv)
            else:
                known_command_path(parser, argv)
        except (SystemExit, ValueError) as exc:
            wrong.append(f"{where}: plexray {' '.join(argv)} ({exc})")
    assert not wrong, "\n".join(wrong)


def known_command_path(parser, argv: list[str]) -> None:
    """Raise ValueError unless argv's leading words name subcommands that exist (options and arguments
    of a command named inline are not checked: prose names commands without them)."""
    import argparse

    for word in argv:
        actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if not actions:
            return
        if word not in actions[0].choices:
            raise ValueError(f"no command {word!r}; there are {sorted(actions[0].choices)}")
        parser = actions[0].choices[word]


@pytest.mark.parametrize("name, exported", [("ray_plexray_sessions_opened", False), ("ray_plexray_live_sessions", True),
                                            ("ray_plexray_wait_seconds_count", True)])
def test_the_metric_names_follow_prometheus_suffixes(name, exported):
    assert (name in exported_metric_names()) == exported


DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "plexray_grafana_dashboard.json"
# What an operator watches (issue 25): sessions, capacity, busy answers, tick p50/p99, late ticks, frames
# dropped, retrieval latency.
WATCHED = {"ray_plexray_live_sessions", "ray_plexray_session_capacity", "ray_plexray_sessions_rejected_total",
           "ray_plexray_tick_ms_p50", "ray_plexray_tick_ms_p99", "ray_plexray_late_ticks_total",
           "ray_plexray_frames_dropped_total", "ray_plexray_retrieval_ms_bucket"}


def test_every_grafana_panel_queries_exported_metrics_and_the_watched_ones_have_panels():
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    exported, queried, wrong = exported_metric_names(), set(), []
    for panel in dashboard["panels"]:
        names = {name for target in panel["targets"] for name in METRIC.findall(target["expr"])}
        if not names:
            wrong.append(f"{panel['title']}: queries no plexray metric")
        wrong.extend(f"{panel['title']}: {name} is not exported" for name in sorted(names - exported))
        queried |= names
    assert not wrong, "\n".join(wrong)
    assert WATCHED <= queried, f"no panel for {sorted(WATCHED - queried)}"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert DASHBOARD.name in (REPO_ROOT / "docs" / "operations.md").read_text()  # documented: how to install it
