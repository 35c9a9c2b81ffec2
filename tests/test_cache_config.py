"""Where cache settings come from: arguments, environment, lazyflow.toml, pyproject, defaults."""

from __future__ import annotations

import inspect
import re

import pytest

import lazyflow as lf
from lazyflow.cache.config import SCHEMA, ConfigError, resolve, setting


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory as the working directory, with no cache variables set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAZYFLOW_CACHE_DIR")
    return tmp_path


def test_the_default_is_memory_and_disk_in_dot_lazyflow(project):
    cache = lf.Cache()
    assert [t.name for t in cache.tiers] == ["memory", "disk"]
    assert cache.tier("disk").directory == str(project / ".lazyflow")
    assert cache.tier("disk").size_limit == 20 * 10**9


def test_a_flow_gets_the_default_cache(project):
    flow = lf.Flow("default-cache")

    @flow.node
    def one():
        return 1

    flow.get("one")
    assert (project / ".lazyflow" / "cache.db").exists()


def test_cache_dir_variable_moves_the_disk_tier(project, tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert lf.Cache().tier("disk").directory == str(tmp_path / "elsewhere")


def test_remote_variables_add_a_remote_tier(project, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_REMOTE", "memory://team/lf")
    monkeypatch.setenv("LAZYFLOW_REMOTE_OPTIONS", '{"skip_instance_cache": true}')
    cache = lf.Cache()
    assert [t.name for t in cache.tiers] == ["memory", "disk", "remote"]
    assert cache.tier("remote").options == {"skip_instance_cache": True}


def test_remote_options_that_are_not_json_say_what_to_write(project, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_REMOTE_OPTIONS", "endpoint_url=http://x")
    with pytest.raises(ConfigError, match="LAZYFLOW_REMOTE_OPTIONS must be a JSON object"):
        lf.Cache()


def test_lazyflow_toml_sets_the_cache(project):
    (project / "lazyflow.toml").write_text(
        'memory = "1GB"\ndisk = "data/cache"\ndisk_limit = "5GB"\nremote = "memory://lf"\n'
        '[remote_options]\nskip_instance_cache = true\n')
    settings = resolve()
    assert settings.memory == "1GB" and settings.disk_limit == "5GB"
    assert settings.disk == str(project / "data" / "cache")
    assert (settings.remote, settings.remote_options) == ("memory://lf",
                                                          {"skip_instance_cache": True})


def test_pyproject_tool_table_is_found_from_a_subdirectory(project, monkeypatch):
    (project / "pyproject.toml").write_text('[tool.lazyflow]\ndisk = ".cache/lf"\n')
    (project / "notebooks").mkdir()
    monkeypatch.chdir(project / "notebooks")
    assert resolve().disk == str(project / ".cache" / "lf")


def test_false_in_a_project_file_turns_a_tier_off(project):
    (project / "lazyflow.toml").write_text("disk = false\n")
    assert [t.name for t in lf.Cache().tiers] == ["memory"]


def test_the_environment_beats_the_project_file(project, monkeypatch, tmp_path):
    (project / "lazyflow.toml").write_text('disk = "from-file"\n')
    monkeypatch.setenv("LAZYFLOW_CACHE_DIR", str(tmp_path / "from-env"))
    assert resolve().disk == str(tmp_path / "from-env")


def test_explicit_arguments_beat_everything(project, monkeypatch, tmp_path):
    (project / "lazyflow.toml").write_text('remote = "memory://from-file"\n')
    monkeypatch.setenv("LAZYFLOW_CACHE_DIR", str(tmp_path / "from-env"))
    cache = lf.Cache(memory="10MB", disk=str(tmp_path / "explicit"), remote=None)
    assert [t.name for t in cache.tiers] == ["memory", "disk"]
    assert cache.tier("memory").max_bytes == 10**7
    assert cache.tier("disk").directory == str(tmp_path / "explicit")


def test_invalid_toml_names_the_file(project):
    (project / "lazyflow.toml").write_text("disk = \n")
    with pytest.raises(ConfigError, match="lazyflow.toml is not valid TOML"):
        resolve()


def test_a_memory_only_flow_ignores_a_configured_remote(project, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_REMOTE", "memory://team/lf")
    assert [t.name for t in lf.Flow("m", cache=None).cache.tiers] == ["memory"]


# --------------------------------------------------------------------------- the schema


def test_an_unknown_key_in_lazyflow_toml_is_an_error_naming_it_and_its_close_match(project):
    (project / "lazyflow.toml").write_text('memroy = "2GB"\n')
    with pytest.raises(ConfigError, match=r"lazyflow.toml: unknown key 'memroy' "
                       r"\(did you mean 'memory'\?\)"):
        lf.Cache()


def test_an_unknown_key_is_named_unknown_to_this_lazyflow_version(project):
    (project / "lazyflow.toml").write_text('executor = "threads"\n')
    release = ".".join(lf.__version__.split(".")[:2])
    with pytest.raises(ConfigError, match=f"unknown key 'executor': it is unknown to "
                       f"lazyflow {re.escape(release)}; .* upgrade lazyflow"):
        resolve()


def test_an_unknown_key_in_the_pyproject_table_is_an_error_too(project):
    (project / "pyproject.toml").write_text('[tool.lazyflow]\ndisk_limt = "5GB"\n')
    with pytest.raises(ConfigError, match=r"pyproject.toml \[tool.lazyflow\]: unknown key "
                       r"'disk_limt' \(did you mean 'disk_limit'\?\)"):
        resolve()


def test_other_tools_tables_in_pyproject_are_not_lazyflows_business(project):
    (project / "pyproject.toml").write_text('[tool.ruff]\nline-length = 100\n'
                                            '[tool.lazyflow]\ndisk_limit = "5GB"\n')
    assert resolve().disk_limit == "5GB"


def test_keys_inside_remote_options_go_to_fsspec_unchecked(project):
    (project / "lazyflow.toml").write_text('[remote_options]\nanything_fsspec_takes = 1\n')
    assert resolve().remote_options == {"anything_fsspec_takes": 1}


@pytest.mark.parametrize("line, message", [
    ("memory = [1]", r"memory must be a size: bytes or a string such as \"4GB\", got \[1\]"),
    ('memory = "lots"', r"memory must be a size: .*, got 'lots'"),
    ("disk = 3", "disk must be a directory, or false for no disk tier, got 3"),
    ("remote = true", "remote must be a URL such as .*, or false for no remote tier, got True"),
    ('remote_options = "fast"', "remote_options must be a table of fsspec options, got 'fast'"),
])
def test_a_value_of_the_wrong_type_names_the_file_the_key_and_what_it_takes(project, line,
                                                                            message):
    (project / "lazyflow.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match="lazyflow.toml: " + message):
        resolve()


def test_a_variable_that_is_not_a_size_names_the_variable(project, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_MEMORY", "lots")
    with pytest.raises(ConfigError, match="LAZYFLOW_MEMORY must be a size: .*, got 'lots'"):
        lf.Cache()


def test_every_cache_setting_resolve_takes_is_declared_in_the_schema():
    taken = set(inspect.signature(resolve).parameters) - {"start"}
    assert {name for name, s in SCHEMA.items() if s.part == "cache"} == taken
    assert all(s.env.startswith("LAZYFLOW_") for s in SCHEMA.values())


def test_a_part_reads_one_setting_from_the_project_file_through_the_schema(project):
    (project / "lazyflow.toml").write_text('disk_limit = "7GB"\n')
    assert setting("disk_limit") == "7GB"
