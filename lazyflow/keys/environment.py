"""The producing environment: what a value was computed with, beyond its code.

Design note
-----------
A key covers the code a node reaches and the packages that code *names*
(``package==version``), but not packages it uses without naming them
(``raw.dropna()`` on an input runs pandas code the node never mentions), nor
the interpreter. So every entry also records the environment that produced it
— Python, implementation, platform, and every installed distribution's
version — as a digest in its metadata, with the full description stored
apart: a record once per environment on the memory and disk tiers, and on a
remote inside the first entry each process writes there. ``flow.explain``
says what differs when a hit was computed elsewhere, and ``lf.Cache(scope="environment")`` makes the
environment part of every key, for teams that must never mix results across
environments.

A version is not enough for distributions installed from a path or a
repository (PEP 610's ``direct_url.json``): their code changes while the
version stays. Such a distribution's token adds its VCS commit, or for a
copied directory the digest of its ``RECORD`` (the hashes of every installed
file). Editable installs run from their source folder, which the code
fingerprint walks as user code.

The distributions are read from the ``*.dist-info`` folders on ``sys.path``
(a directory listing, a few milliseconds), not through
``importlib.metadata.distributions()``, which parses every METADATA file
(~100 ms). This module knows nothing of graphs or caches.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import xxhash

from lazyflow.records import EnvironmentDescription

__all__ = ["Environment", "current", "differences", "distribution_token", "forget", "known"]


@dataclass(frozen=True)
class Environment:
    """Interpreter, platform and installed distributions, with one digest over them all."""

    python: str
    implementation: str
    platform: str
    packages: Mapping[str, str] = field(default_factory=dict)
    digest: str = ""

    def describe(self) -> EnvironmentDescription:
        """A JSON-able description (what the cache stores once per environment)."""
        return {"python": self.python, "implementation": self.implementation,
                "platform": self.platform, "packages": dict(self.packages)}


@functools.lru_cache(maxsize=1)
def current() -> Environment:
    """This process's environment (read once: installs during a session are not seen).

    >>> current().digest == current().digest
    True
    """
    global _KNOWN
    packages = dict(sorted(_distributions().items()))
    python = platform.python_version()
    implementation = sys.implementation.name
    machine = f"{sys.platform}-{platform.machine()}"
    text = json.dumps([python, implementation, machine, packages], separators=(",", ":"))
    _KNOWN = True
    return Environment(python, implementation, machine, packages,
                       xxhash.xxh3_128_hexdigest(text.encode()))


_KNOWN = False  # a flag, not current.cache_info(): tests replace current() with a lambda


def known() -> bool:
    """Whether this process has read its environment: :func:`current` then costs nothing
    (the first call reads every distribution's folder, ~3 ms with 200 installed)."""
    return _KNOWN


def forget() -> None:
    """Read the environment afresh when next asked (it is read once per process)."""
    global _KNOWN
    current.cache_clear()
    _dist_infos.cache_clear()
    _token.cache_clear()
    _KNOWN = False


def distribution_token(name: str) -> str | None:
    """``version`` (plus ``+vcs.<commit>`` or ``+record.<digest>`` for path and repository
    installs) of the installed distribution ``name``; ``None`` if it is not installed.

    Reads that distribution's folder only: a code fingerprint naming numpy needs numpy's
    token, and a new process serving a hit should not open every distribution's
    ``direct_url.json`` (200 files here) to give it."""
    return _token(_normalize(name))


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two described environments, as short phrases.

    >>> differences({"python": "3.11.7", "packages": {"numpy": "1.26.4"}},
    ...             {"python": "3.12.1", "packages": {"numpy": "2.1.0", "polars": "1.0"}})
    ['python 3.11.7 -> 3.12.1', 'numpy 1.26.4 -> 2.1.0', 'polars not installed -> 1.0']
    """
    out = [f"{what} {old.get(what)} -> {new.get(what)}"
           for what in ("python", "implementation", "platform") if old.get(what) != new.get(what)]
    before: Mapping[str, str] = old.get("packages") or {}
    after: Mapping[str, str] = new.get("packages") or {}
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            out.append(f"{name} {before.get(name, 'not installed')} -> "
                       f"{after.get(name, 'not installed')}")
    return out


def _normalize(name: str) -> str:
    """PEP 503 names: ``Foo_Bar`` and ``foo-bar`` are one distribution."""
    return name.lower().replace("_", "-").replace(".", "-")


def _distributions() -> dict[str, str]:
    return {key: token for key in _dist_infos() if (token := _token(key)) is not None}


@functools.lru_cache(maxsize=1)
def _dist_infos() -> dict[str, tuple[str, str]]:
    """Each installed distribution's normalized name: its version and ``.dist-info`` folder
    (directory listings only, no file read)."""
    found: dict[str, tuple[str, str]] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if not folder.endswith(".dist-info"):
                continue
            name, _, version = folder[:-len(".dist-info")].partition("-")
            key = _normalize(name)
            if key in found or not version:
                continue  # the first on sys.path is the one imported
            found[key] = (version, os.path.join(entry or ".", folder))
    return found


@functools.cache
def _token(key: str) -> str | None:
    """The token of the distribution of normalized name ``key``, or ``None``."""
    found = _dist_infos().get(key)
    return None if found is None else found[0] + _origin(found[1])


def _origin(dist_info: str) -> str:
    """The PEP 610 suffix of a distribution installed from a repository or a path."""
    try:
        with open(os.path.join(dist_info, "direct_url.json"), encoding="utf-8") as f:
            direct = json.load(f)
    except (OSError, ValueError):
        return ""  # from an index: the version says it all
    commit = (direct.get("vcs_info") or {}).get("commit_id")
    if commit:
        return f"+vcs.{commit[:12]}"
    if (direct.get("dir_info") or {}).get("editable"):
        return "+editable"
    try:
        with open(os.path.join(dist_info, "RECORD"), "rb") as f:
            return f"+record.{xxhash.xxh3_64_hexdigest(f.read())}"
    except OSError:
        return "+path"
