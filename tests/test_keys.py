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
        Domain.CONTENT: "lazyflow-content-2\0",
        Domain.TRACE: "lazyflow-trace-2\0",
        Domain.LATEST: "lazyflow-latest-2\0",
        Domain.SCOPED: "lazyflow-scoped-2\0",
        Domain.ENVIRONMENT: "lazyflow-environment-2\0",
        Domain.ELEMENT: "lazyflow-element-2\0",
        Domain.MAP_CHUNK: "lazyflow-map-chunk-2\0",
        Domain.LAZY_TRACES: "lazyflow-lazy-traces-2\0",
        Domain.FILE: "lazyflow-file-2\0",
        Domain.SHOWN: "lazyflow-shown-2\0",
        Domain.CHECKED: "lazyflow-checked-2\0",
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
        "content": "fca9ceb1dc83b1a8ec996f5164b2ddfe",
        "content, two parameters": "c7ffe1b18857baa9942d07971b9edb01",
        "content, nothing": "4204db39aaf70d5efa58821aa272e69c",
        "trace": "8c9d89e2013fbd65ad6b1896ea53b6f5",
        "latest": "38022e036854c62bd090a2428bcabfdd",
        "scoped": "e195a6a44ad71c5cc1dc079ff6c8e5ed",
        "environment": "5b7247835ed3c23d54a76c189f1b089c",
        "element": "2c211f0d0fc07a2abff3a062f664e3fa",
        "map chunk": "4502471c180575bd8c50616fa9eff296",
        "map chunk 1": "63383e5572808fe0bda138386f39dab6",
        "lazy traces": "b8fc6748bd5af10359716f578576d752",
        "file": "6a12d1bc0e6fd8a347ac7a5ba494710d",
        "shown": "43e0d85b8c27ece8aec2a25bb126fbd5",
        "checked": "fc63e7e3d6c62051349c711600934a83",
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
