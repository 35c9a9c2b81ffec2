"""Where cache settings come from: arguments, environment, ``lazyflow.toml``, defaults.

Design note
-----------
Policy. Each setting is resolved on its own, first match wins:

1. an explicit argument to ``lf.Cache(...)`` (``None`` means "no such tier");
2. an environment variable (``LAZYFLOW_MEMORY``, ``LAZYFLOW_CACHE_DIR``,
   ``LAZYFLOW_DISK_LIMIT``, ``LAZYFLOW_REMOTE``, ``LAZYFLOW_REMOTE_OPTIONS``
   as a JSON object);
3. the project file: ``lazyflow.toml``, else ``[tool.lazyflow]`` of
   ``pyproject.toml``, in the current directory or the nearest parent that
   has either file (the project root, as ruff and black find theirs);
   relative ``disk`` paths are relative to that file;
4. the defaults: a quarter of RAM in memory, ``./.lazyflow`` on disk with a
   20 GB limit, no remote.

``remote_options`` go to the fsspec filesystem, except ``lazyflow_timeout``:
lazyflow's own deadline for each remote operation, which ``remote_store.py``
reads, checks and takes out (so it comes from wherever ``remote_options`` come
from).

Environment beats the file so that a CI job or a colleague can redirect a
project's cache without editing it. State: none; settings are read when a
``Cache`` is built (not at import), so a notebook can set variables first.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lazyflow.errors import LazyflowError

__all__ = ["DEFAULT", "ConfigError", "Settings", "resolve"]

DEFAULT_DISK = ".lazyflow"
DEFAULT_DISK_LIMIT = "20GB"

_ENV = {"memory": "LAZYFLOW_MEMORY", "disk": "LAZYFLOW_CACHE_DIR",
        "disk_limit": "LAZYFLOW_DISK_LIMIT", "remote": "LAZYFLOW_REMOTE",
        "remote_options": "LAZYFLOW_REMOTE_OPTIONS"}


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Stands for "not given": take the setting from the environment, file or defaults."""


class ConfigError(LazyflowError, ValueError):
    """A cache setting in the environment or a project file cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved cache settings; ``None`` means the tier is off.

    ``memory`` is ``DEFAULT`` for "a quarter of RAM"; sizes may still be strings.
    """

    memory: int | str | None
    disk: str | None
    disk_limit: int | str
    remote: str | None
    remote_options: dict[str, Any]


def resolve(*, memory: Any = DEFAULT, disk: Any = DEFAULT, disk_limit: Any = DEFAULT,
            remote: Any = DEFAULT, remote_options: Any = DEFAULT,
            start: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve every setting not given explicitly; ``start`` is where the project file search begins.

    >>> resolve(memory="1GB", disk=None, remote=None).disk is None
    True
    """
    explicit = {"memory": memory, "disk": disk, "disk_limit": disk_limit, "remote": remote,
                "remote_options": remote_options}
    file_values: dict[str, Any] | None = None
    resolved: dict[str, Any] = {}
    for name, value in explicit.items():
        if value is DEFAULT:
            value = _from_env(name)
        if value is DEFAULT:
            if file_values is None:
                file_values = _from_file(Path(start or os.getcwd()))
            value = file_values.get(name, DEFAULT)
        resolved[name] = value
    disk_value = resolved["disk"]
    if disk_value is DEFAULT:
        disk_value = DEFAULT_DISK
    return Settings(
        memory=resolved["memory"],
        disk=None if disk_value is None else os.path.abspath(os.fspath(disk_value)),
        disk_limit=DEFAULT_DISK_LIMIT if resolved["disk_limit"] is DEFAULT else resolved["disk_limit"],
        remote=None if resolved["remote"] is DEFAULT else resolved["remote"],
        remote_options={} if resolved["remote_options"] in (DEFAULT, None)
        else dict(resolved["remote_options"]),
    )


def _from_env(name: str) -> Any:
    variable = _ENV[name]
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return DEFAULT
    if name == "remote_options":
        try:
            options = json.loads(raw)
        except ValueError as e:
            raise ConfigError(f"{variable} must be a JSON object such as "
                              f'{{"endpoint_url": "http://127.0.0.1:9000"}}, got {raw!r} ({e})') from e
        if not isinstance(options, dict):
            raise ConfigError(f"{variable} must be a JSON object, got {raw!r}")
        return options
    if name in ("disk", "remote") and raw.lower() in ("none", "off"):
        return None
    return raw


def _from_file(start: Path) -> dict[str, Any]:
    for directory in (start, *start.parents):
        own, pyproject = directory / "lazyflow.toml", directory / "pyproject.toml"
        if own.is_file():
            return _validated(_load_toml(own), own)
        if pyproject.is_file():
            table = _load_toml(pyproject).get("tool", {}).get("lazyflow", {})
            return _validated(table, pyproject)
    return {}


def _validated(table: dict[str, Any], path: Path) -> dict[str, Any]:
    # other keys belong to other parts of lazyflow (the command line, executors)
    values = {name: value for name, value in table.items() if name in _ENV}
    for name in ("disk", "remote"):
        if values.get(name) is False:  # TOML has no null: `disk = false` turns a tier off
            values[name] = None
    if isinstance(values.get("disk"), str):
        values["disk"] = str((path.parent / values["disk"]).resolve())
    if "remote_options" in values and not isinstance(values["remote_options"], dict):
        raise ConfigError(f"{path}: remote_options must be a table, "
                          f"got {values['remote_options']!r}")
    return values


def _load_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            table: dict[str, Any] = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from e
    return table
