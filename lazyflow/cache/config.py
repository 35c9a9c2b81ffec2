"""Where settings come from: arguments, environment, ``lazyflow.toml``, defaults.

Design note
-----------
Policy. Each setting is resolved on its own, first match wins:

1. an explicit argument to ``lf.Cache(...)`` (``None`` means "no such tier");
2. an environment variable (``LAZYFLOW_MEMORY``, ``LAZYFLOW_CACHE_DIR``,
   ``LAZYFLOW_DISK_LIMIT``, ``LAZYFLOW_REMOTE``, ``LAZYFLOW_REMOTE_OPTIONS``
   as a JSON object, ``LAZYFLOW_SIGNING_KEY``, ``LAZYFLOW_TRUSTED_KEYS``,
   ``LAZYFLOW_REMOTE_READ_ONLY``);
3. the project file: ``lazyflow.toml``, else ``[tool.lazyflow]`` of
   ``pyproject.toml``, in the current directory or the nearest parent that
   has either file (the project root, as ruff and black find theirs);
   relative ``disk`` paths are relative to that file;
4. the defaults: a quarter of RAM in memory, ``./.lazyflow`` on disk with a
   20 GB limit, no remote.

The project file is read through one typed schema, :data:`SCHEMA`: every key
any part of lazyflow reads from it is declared there as a :class:`Setting`
(the part that reads it, the values it takes, its environment variable), and
a part adding a key adds its line there. A key the schema does not declare is
an error naming the key, its close match and the lazyflow version that does
not know it (a teammate's newer lazyflow may), so ``memroy = "2GB"`` cannot be
ignored silently; so is a value of the wrong type, naming the file and key.
Variables are checked by the same schema. Rejected: each part registering its
keys from its own module; imports are lazy, so the file is often read before
the module owning a key is imported, and its check would refuse valid keys.

``remote_options`` go to the fsspec filesystem, except ``lazyflow_timeout``:
lazyflow's own deadline for each remote operation, which ``remote_store.py``
reads, checks and takes out (so it comes from wherever ``remote_options`` come
from); the schema checks that they form a table, not what is in it.

Keys. ``sign_with`` and ``trusted_keys`` (``trust.py``) name key *files*
in the project file, never keys: the file is committed and shared, a
secret in it is no secret. Their environment variables hold the keys
themselves (a CI secret is a variable). A setting marked ``secret`` never
has its value shown in an error.

Environment beats the file so that a CI job or a colleague can redirect a
project's cache without editing it. State: none; settings are read when a
``Cache`` is built (not at import), so a notebook can set variables first.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lazyflow._version import __version__
from lazyflow.cache.sizes import parse_size
from lazyflow.errors import ConfigError

__all__ = ["DEFAULT", "SCHEMA", "ConfigError", "Setting", "Settings", "resolve", "setting"]

DEFAULT_DISK = ".lazyflow"
DEFAULT_DISK_LIMIT = "20GB"


class _Default:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Stands for "not given": take the setting from the environment, file or defaults."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One key of the project file: who reads it, what it takes, where else it comes from.

    ``check`` returns the value to use for a value read from the file (or raises
    ``ValueError``); ``parse`` does the same for the text of ``env``, the
    environment variable. ``expected`` (``env_expected`` for the variable, when
    it is written differently) says what is valid, for messages.
    """

    name: str
    part: str
    expected: str
    check: Callable[[Any], Any]
    env: str
    parse: Callable[[str], Any]
    env_expected: str = ""
    secret: bool = False
    """Whether the value is a secret: an error about it never shows it."""


def _size(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError
    try:
        parse_size(value)  # the tier parses it again when built
    except ValueError:
        raise ValueError from None  # the message says what a size is
    return value


def _text_or_off(value: Any) -> Any:
    if value is False:  # TOML has no null: `disk = false` turns a tier off
        return None
    if not isinstance(value, str) or not value:
        raise ValueError
    return value


def _env_text_or_off(text: str) -> Any:
    return None if text.lower() in ("none", "off") else text


def _table(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError
    return dict(value)


def _json_table(text: str) -> Any:
    try:
        options = json.loads(text)
    except ValueError as e:
        raise ValueError(f"({e})") from e
    return _table(options)


def _key_file(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError
    return Path(value).expanduser()  # relative: to the file's folder (_validated)


def _key_files(value: Any) -> Any:
    if not isinstance(value, list):
        raise ValueError
    return tuple(_public_key_or_file(item) for item in value)


def _public_key_or_file(item: Any) -> Any:
    """A public key is no secret: it may be written in the file itself."""
    if isinstance(item, str) and item.startswith(_PUBLIC_KEY):
        return item
    return _key_file(item)


def _env_keys(text: str) -> Any:
    return tuple(text.split())


def _flag(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError
    return value


def _env_flag(text: str) -> Any:
    words = {"1": True, "true": True, "yes": True, "on": True,
             "0": False, "false": False, "no": False, "off": False}
    if text.lower() not in words:
        raise ValueError
    return words[text.lower()]


_PUBLIC_KEY = "ed25519:"
_SIZE = 'a size: bytes or a string such as "4GB"'
_JSON = 'a JSON object such as {"endpoint_url": "http://127.0.0.1:9000"}'

SCHEMA: Mapping[str, Setting] = types.MappingProxyType({s.name: s for s in (
    # the cache: cache/hierarchy.py builds its tiers from these
    Setting("memory", "cache", _SIZE, _size, "LAZYFLOW_MEMORY", _size),
    Setting("disk", "cache", "a directory, or false for no disk tier", _text_or_off,
            "LAZYFLOW_CACHE_DIR", _env_text_or_off),
    Setting("disk_limit", "cache", _SIZE, _size, "LAZYFLOW_DISK_LIMIT", _size),
    Setting("remote", "cache", 'a URL such as "s3://bucket/lf", or false for no remote tier',
            _text_or_off, "LAZYFLOW_REMOTE", _env_text_or_off),
    Setting("remote_options", "cache", "a table of fsspec options", _table,
            "LAZYFLOW_REMOTE_OPTIONS", _json_table, env_expected=_JSON),
    # remote trust (cache/trust.py): the file names key files, the variables hold keys
    Setting("sign_with", "cache", "the path of a key file (never the key itself: this file "
            "is shared)", _key_file, "LAZYFLOW_SIGNING_KEY", str,
            env_expected="the signing key itself", secret=True),
    Setting("trusted_keys", "cache", 'a list of key files or public keys ("ed25519:...")',
            _key_files, "LAZYFLOW_TRUSTED_KEYS", _env_keys,
            env_expected="keys separated by spaces", secret=True),
    Setting("read_only", "cache", "true or false", _flag, "LAZYFLOW_REMOTE_READ_ONLY",
            _env_flag, env_expected="1, true, yes, on, 0, false, no or off"),
)})
"""Every key of ``lazyflow.toml`` / ``[tool.lazyflow]``, by name (read-only)."""


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
    sign_with: Any = None
    """A secret (``str``/``bytes``), a key file (``os.PathLike``) or ``None``: ``trust.py``."""
    trusted_keys: tuple[Any, ...] = ()
    read_only: bool = False

    def __repr__(self) -> str:  # the signing key is a secret
        shown = {name: getattr(self, name) for name in ("memory", "disk", "disk_limit",
                                                         "remote", "read_only")}
        keys = f", sign_with=<set>, trusted_keys=<{len(self.trusted_keys)}>" \
            if self.sign_with is not None or self.trusted_keys else ""
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + keys + ")"


def setting(name: str, *, start: str | os.PathLike[str] | None = None) -> Any:
    """One setting from the environment, else the project file (searched from ``start``,
    the working directory by default), else ``DEFAULT``; checked by :data:`SCHEMA`."""
    value = _from_env(name)
    if value is DEFAULT:
        value = _from_file(Path(start or os.getcwd())).get(name, DEFAULT)
    return value


def resolve(*, memory: Any = DEFAULT, disk: Any = DEFAULT, disk_limit: Any = DEFAULT,
            remote: Any = DEFAULT, remote_options: Any = DEFAULT, sign_with: Any = DEFAULT,
            trusted_keys: Any = DEFAULT, read_only: Any = DEFAULT,
            start: str | os.PathLike[str] | None = None) -> Settings:
    """Resolve every setting not given explicitly; ``start`` is where the project file search begins.

    >>> resolve(memory="1GB", disk=None, remote=None).disk is None
    True
    """
    explicit = {"memory": memory, "disk": disk, "disk_limit": disk_limit, "remote": remote,
                "remote_options": remote_options, "sign_with": sign_with,
                "trusted_keys": trusted_keys, "read_only": read_only}
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
        sign_with=None if resolved["sign_with"] is DEFAULT else resolved["sign_with"],
        trusted_keys=() if resolved["trusted_keys"] in (DEFAULT, None)
        else tuple(resolved["trusted_keys"]),
        read_only=False if resolved["read_only"] is DEFAULT else resolved["read_only"],
    )


def _from_env(name: str) -> Any:
    entry = SCHEMA[name]
    raw = os.environ.get(entry.env)
    if raw is None or raw == "":
        return DEFAULT
    try:
        return entry.parse(raw)
    except ValueError as e:
        detail = f" {e}" if str(e) else ""
        got = f"{len(raw)} characters (not shown)" if entry.secret else repr(raw)
        raise ConfigError(f"{entry.env} must be {entry.env_expected or entry.expected}, "
                          f"got {got}{detail}") from None


def _from_file(start: Path) -> dict[str, Any]:
    for directory in (start, *start.parents):
        own, pyproject = directory / "lazyflow.toml", directory / "pyproject.toml"
        if own.is_file():
            return _validated(_load_toml(own), own, str(own))
        if pyproject.is_file():
            table = _load_toml(pyproject).get("tool", {}).get("lazyflow", {})
            return _validated(table, pyproject, f"{pyproject} [tool.lazyflow]")
    return {}


def _validated(table: dict[str, Any], path: Path, where: str) -> dict[str, Any]:
    """The file's values checked against :data:`SCHEMA`; relative ``disk`` made absolute."""
    values = {}
    for name, value in table.items():
        entry = SCHEMA.get(name)
        if entry is None:
            raise ConfigError(_unknown_key(name, where))
        try:
            values[name] = entry.check(value)
        except ValueError:
            got = "a value not shown" if entry.secret else repr(value)
            raise ConfigError(f"{where}: {name} must be {entry.expected}, "
                              f"got {got}") from None
    if isinstance(values.get("disk"), str):
        values["disk"] = str((path.parent / values["disk"]).resolve())
    if isinstance(values.get("sign_with"), Path):
        values["sign_with"] = path.parent / values["sign_with"]
    if "trusted_keys" in values:
        values["trusted_keys"] = tuple(path.parent / key if isinstance(key, Path) else key
                                       for key in values["trusted_keys"])
    return values


def _unknown_key(name: str, where: str) -> str:
    close = difflib.get_close_matches(name, list(SCHEMA), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{where}: unknown key {name!r}{hint}: it is unknown to lazyflow {_release()}; "
            "correct or remove it, or upgrade lazyflow if a newer version uses it "
            f"(keys known here: {', '.join(sorted(SCHEMA))})")


def _release() -> str:
    """``X.Y`` of the installed version (teammates may run a newer one)."""
    match = re.match(r"\d+(\.\d+)?", __version__)
    return match.group(0) if match else __version__


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
