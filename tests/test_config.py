"""Config files: unknown keys, wrong types and impossible values name the file and the key."""

from __future__ import annotations

import pytest

from plexray.config import dump_config, load_config
from plexray.errors import ConfigError
from plexray.settings import PlexrayConfig


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, "model:\n  dtype: bfloat16\n")
    config = load_config(PlexrayConfig, path, ["model.device=cuda:1", "model.compile=true"])
    assert (config.model.dtype, config.model.device, config.model.compile) == ("bfloat16", "cuda:1", True)
    assert config.model.checkpoint == "demo"
    assert load_config(PlexrayConfig, write(tmp_path, dump_config(config))) == config


def test_unknown_key_names_file_and_key(tmp_path):
    path = write(tmp_path, "model:\n  chekpoint: hf://nvidia/personaplex-7b-v1\n")
    with pytest.raises(ConfigError, match=rf"{path}: model.chekpoint: unknown key"):
        load_config(PlexrayConfig, path)


def test_wrong_type_and_impossible_value(tmp_path):
    path = write(tmp_path, "model:\n  compile: [1, 2]\n  device: tpu\n")
    with pytest.raises(ConfigError) as info:
        load_config(PlexrayConfig, path)
    message = str(info.value)
    assert f"{path}: model.compile: Input should be a valid boolean" in message
    assert f"{path}: model.device: String should match pattern" in message and "'tpu'" in message


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PlexrayConfig, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(PlexrayConfig, write(tmp_path, "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(PlexrayConfig, write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(PlexrayConfig, None, ["model.dtype"])
    with pytest.raises(ConfigError, match=r"--set model.dtype=int4: model.dtype: Input should be 'float32'"):
        load_config(PlexrayConfig, None, ["model.dtype=int4"])
    # A typo in a --set key is blamed on that --set, the file's own problems on the file.
    config_file = write(tmp_path, "train:\n  max_steps: -1\n")
    with pytest.raises(ConfigError) as error:
        load_config(PlexrayConfig, config_file, ["train.max_stepz=3", "evaluation.test_set.conversations={dancing: 1}"])
    lines = sorted(line.strip() for line in str(error.value).splitlines()[1:])
    assert len(lines) == 3
    assert lines[0].startswith("--set evaluation.test_set.conversations={dancing: 1}: evaluation.test_set.conversations:")
    assert lines[1] == "--set train.max_stepz=3: train.max_stepz: unknown key"
    assert lines[2].startswith(f"{config_file}: train.max_steps: ")


def test_example_configs_are_valid_and_load_back_from_their_dump(tmp_path):
    """Jobs hand the dumped config to Ray workers and write it beside their outputs: it must load back
    unchanged, derived values (the engine's slots from sessions_per_replica) included."""
    from repo_paths import REPO_ROOT

    paths = sorted((REPO_ROOT / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        for overrides in ([], ["serve.sessions_per_replica=3"]):
            config = load_config(PlexrayConfig, path, overrides)
            assert load_config(PlexrayConfig, write(tmp_path, dump_config(config))) == config
            assert PlexrayConfig.model_validate(config.model_dump(mode="json")) == config


def test_reference_documents_every_key():
    from plexray.config_cli import reference_markdown

    text = reference_markdown(PlexrayConfig)
    for name in PlexrayConfig.model_fields["model"].annotation.model_fields:
        assert f"| `model.{name}` |" in text


def test_committed_configuration_reference_is_current():
    from plexray.config_cli import reference_markdown
    from repo_paths import REPO_ROOT

    committed = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(PlexrayConfig) + "\n", "run: plexray config reference > docs/configuration.md"


@pytest.mark.parametrize("content, problem", [
    (b"model:\n  dtype: \xff\xfe bfloat16\n", "not UTF-8 text"),
    ("model:\n  dtype: [unclosed\n".encode(), "not valid YAML"),
    ("train:\n  max_steps: 5\n  batch_size: 2\n  max_steps: 7\n".encode(),
     "not valid YAML: duplicate key 'max_steps' at line 4"),
])
def test_unreadable_config_file_is_one_line_naming_the_file(tmp_path, capsys, content, problem):
    """Bytes that are not UTF-8 (a file saved as Latin-1 or UTF-16), broken YAML, and a key given twice
    (which PyYAML would resolve silently, the later winning): one line, no traceback."""
    from plexray.cli import main

    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^{path}: {problem}"):
        load_config(PlexrayConfig, path)
    assert main(["config", "show", "--config", str(path)]) == 2
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and str(path) in error_lines[0] and problem in error_lines[0], error_lines
