"""Typed configuration: one YAML file with sections, validated by pydantic, overridable from the CLI.

Every section model forbids unknown keys, so a typo is an error rather than a silently ignored
setting. Errors name the file, the dotted key and the problem.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import pydantic
import yaml

from plexray.errors import ConfigError, PlexrayError

ModelT = tp.TypeVar("ModelT", bound=pydantic.BaseModel)


class StrictModel(pydantic.BaseModel):
    """Base for every config section: unknown keys are errors, assignments are validated."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True)


def apply_overrides(raw: dict, overrides: tp.Sequence[str]) -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a nested dict, returning a new dict."""
    result = _deep_copy(raw)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. train.max_steps=20")
        dotted_key, text_value = override.split("=", 1)
        keys = dotted_key.strip().split(".")
        if not all(keys):
            raise ConfigError(f"override {override!r}: empty key segment in {dotted_key!r}")
        try:
            value = yaml.safe_load(text_value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from None
        node = result
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = value
    return result


def load_config(
    model_cls: type[ModelT],
    path: str | Path | None = None,
    overrides: tp.Sequence[str] = (),
) -> ModelT:
    """Load `model_cls` from a YAML file (or from its defaults when `path` is None), then overrides."""
    source = str(path) if path is not None else "the built-in defaults"
    raw: dict = {}
    if path is not None:
        loaded = read_yaml(Path(path), ConfigError, what="config file")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(loaded).__name__}")
        raw = loaded
    raw = apply_overrides(raw, overrides)
    try:
        return model_cls.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe_validation_error(source, exc, overrides)) from None


def read_yaml(path: Path, error: type[PlexrayError], what: str = "file") -> tp.Any:
    """Parse a YAML file; a missing, unreadable, non-UTF-8 or bad YAML file raises `error`: one line naming the file."""
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")  # explicit: the locale's encoding differs between machines
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                    f"save the {what} as UTF-8") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the later one
    silently: a config edited in two places would run with whichever came last)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's message on one line: the problem and where (its own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def describe_validation_error(source: str, exc: pydantic.ValidationError, overrides: tp.Sequence[str] = ()) -> str:
    """One line per problem: `file: key.path: message (got value)`; a problem in a key that one of
    `overrides` (KEY=VALUE) set is blamed on that `--set KEY=VALUE`, not on the file."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "<top level>"
        setters = [o for o in overrides if key == o.split("=", 1)[0].strip() or
                   key.startswith(o.split("=", 1)[0].strip() + ".")]
        where = f"--set {setters[-1]}" if setters else source  # the last one given wins, as in apply_overrides
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        got = error.get("input")
        got_text = "" if error["type"] in ("extra_forbidden", "missing") else f" (got {got!r})"
        lines.append(f"{where}: {key}: {message}{got_text}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def dump_config(config: pydantic.BaseModel) -> str:
    """The config as YAML, for summaries and manifests (round-trips through load_config)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _deep_copy(raw: dict) -> dict:
    return {key: _deep_copy(value) if isinstance(value, dict) else value for key, value in raw.items()}
