"""Keys: every domain is listed once, and known keys never change silently.

A key's bytes are the cache format (docs/cache-format.md): a changed key orphans every
entry computed under it, on every colleague's disk and on the team's remote. Change the
pinned values below only together with ``keys.KEY_SCHEMA``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import lazyflow as lf
from lazyflow import keys
from lazyflow.engine import settle
from lazyflow.keys import Domain, domain
from lazyflow.model import files, lazy, mapping

ROOT = Path(__file__).resolve().parent.parent
FINGERPRINT = "0123456789abcdef" * 2
A, B = "a" * 32, "b" * 32


def test_every_key_domain_keeps_its_prefix():
    assert {d: domain(d) for d in Domain} == {
        Domain.CONTENT: "lazyflow-content-3\0",
        Domain.TRACE: "lazyflow-trace-3\0",
        Domain.LATEST: "lazyflow-latest-3\0",
        Domain.SCOPED: "lazyflow-scoped-3\0",
        Domain.ENVIRONMENT: "lazyflow-environment-3\0",
        Domain.ELEMENT: "lazyflow-element-3\0",
        Domain.MAP_CHUNK: "lazyflow-map-chunk-3\0",
        Domain.LAZY_TRACES: "lazyflow-lazy-traces-3\0",
        Domain.FILE: "lazyflow-file-3\0",
        Domain.SHOWN: "lazyflow-shown-3\0",
        Domain.CHECKED: "lazyflow-checked-3\0",
    }


def test_known_keys_never_change():
    from lazyflow.notebook.magics import shown_key

    assert {
        "content": keys.content_key(FINGERPRINT, {"n": A}, {"raw": B}),
        "content, two parameters": keys.content_key(FINGERPRINT, {"n": A, "m": B}, {}),
        "content, nothing": keys.content_key(FINGERPRINT, {}, {}),
        "trace": keys.trace_key(FINGERPRINT, {"n": A}, {"raw": B}),
        "latest": keys.latest_key("analysis", "clean"),
        "scoped": keys.scoped(FINGERPRINT, A),
        "environment": keys.environment_key(A),
        "element": mapping.element_key(A, "items", B),
        "map chunk": mapping.chunk_key(A, "items", 0),
        "map chunk 1": mapping.chunk_key(A, "items", 1),
        "lazy traces": lazy.trace_record_key(A),
        "file": files._blob_key(A),
        "shown": shown_key(A),
        "checked": keys.checked_key(A, B),
    } == {
        "content": "0a9d7d7728a7509db0b82db0c5363bec",
        "content, two parameters": "0d22ca77b0ae97fd74dad25c65332241",
        "content, nothing": "2ad70ae53926bed940cbe544fa4beb77",
        "trace": "1a5f43d140c059f0db59faf451a81b89",
        "latest": "60bd1336e4d3186a55133dad83611597",
        "scoped": "b54730980ea073e06013c0992529eb71",
        "environment": "dd8c3ffd8dd2b5b82b45aac9e611639e",
        "element": "16a93ea92dd60a0340ee6979f6090beb",
        "map chunk": "c002733ef2a51b9544de124a3c89ba60",
        "map chunk 1": "0ea19598ae95312112c8f4beef3af55b",
        "lazy traces": "ea17163a0b83ec27f0f3d3625d0342be",
        "file": "903bf4e38cc48d66f3d23f2062418f8d",
        "shown": "b15ecb42f932eb2dd66fc9b239d2f3f2",
        "checked": "3f9eca5eee2148639f034d6c79fd1264",
    }


def test_a_domain_is_named_by_its_enum_member_only():
    with pytest.raises(AttributeError):
        domain("content")  # type: ignore[arg-type]


def _spelled_domains(path: Path) -> list[str]:
    """Calls ``domain(<a string>)`` and string constants that look like a key prefix."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and getattr(node.func, "id",
                                                  getattr(node.func, "attr", None)) == "domain" \
                and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
            found.append(f"{path.name}:{node.lineno}: domain({ast.unparse(node.args[0])})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and any(node.value.startswith(f"lazyflow-{d.value}-") for d in Domain):
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_spells_a_key_domain_itself():
    spelled = [hit for path in sorted((ROOT / "lazyflow").rglob("*.py"))
               for hit in _spelled_domains(path)]
    assert spelled == []


def test_the_version_has_one_source():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert lf.__version__ == settle.__version__ == declared


def test_a_latest_record_of_the_old_layout_still_says_which_input_changed():
    code = {"code:total": A}
    old_style = {"digest": A, "key": B, "params": {}, "fingerprint": code, "inputs": {"raw": A}}
    new_style = {"digest": A, "key": B, "params": {}, "fingerprint": code,
                 "input_digests": {"raw": A}}
    for record in (old_style, new_style):
        assert keys.reasons(record, code, {}, {"raw": B}) == ["input changed (raw)"]
