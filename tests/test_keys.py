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
        Domain.CONTENT: "lazyflow-content-4\0",
        Domain.TRACE: "lazyflow-trace-4\0",
        Domain.LATEST: "lazyflow-latest-4\0",
        Domain.SCOPED: "lazyflow-scoped-4\0",
        Domain.ENVIRONMENT: "lazyflow-environment-4\0",
        Domain.ELEMENT: "lazyflow-element-4\0",
        Domain.MAP_CHUNK: "lazyflow-map-chunk-4\0",
        Domain.LAZY_TRACES: "lazyflow-lazy-traces-4\0",
        Domain.FILE: "lazyflow-file-4\0",
        Domain.SHOWN: "lazyflow-shown-4\0",
        Domain.CHECKED: "lazyflow-checked-4\0",
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
        "content": "d521ece9b5cc9273facb010498a95de3",
        "content, two parameters": "9a12c7e8902bebcf7e577bef63ad3a09",
        "content, nothing": "cf27949402b5581a66477bd9e1fe3e7f",
        "trace": "1b74c65f351fc4169ada6f6916b42524",
        "latest": "57644c5376ab11fdbc08b562564ee296",
        "scoped": "c21b2d3ce6323b3e1c8c75da164a9085",
        "environment": "763d35be68d05cc9552520dbc071f27d",
        "element": "351041ab80025b998b561b41e1c12077",
        "map chunk": "039a9220a22b41f855e015e9ba144071",
        "map chunk 1": "2e365f4dc9cc1d9943030493eb50ec25",
        "lazy traces": "3e46796f7debd5911926fe750f476f4b",
        "file": "8dd5c8ad9191ecf8493ad300d4852d9f",
        "shown": "e41ab519f972ad2ee91dea0022ea6835",
        "checked": "e3a8ec379058c077264382ce85d23c8a",
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
