"""Where cache settings come from: arguments, environment, lazyflow.toml, pyproject, defaults."""

from __future__ import annotations

import pytest

import lazyflow as lf
from lazyflow.cache.config import ConfigError, resolve


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
    (project / "pyproject.toml").write_text('[tool.lazyflow]\ndisk = ".cache/lf"\n'
                                            'executor = "threads"\n')
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
