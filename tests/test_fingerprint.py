"""Code fingerprints: what a function is, so that editing it (and only that) invalidates it."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

import numpy as np
import pytest

import lazyflow as lf

fingerprint_module = importlib.import_module("lazyflow.keys.fingerprint")


class Module:
    """A user module whose cells can be (re-)executed, like a notebook's namespace."""

    def __init__(self, name: str = "user_module") -> None:
        self.namespace: dict = {"__name__": name}

    def run(self, source: str) -> None:
        exec(compile(textwrap.dedent(source), "<cell>", "exec"), self.namespace)

    def __getitem__(self, name: str):
        return self.namespace[name]


@pytest.fixture
def module(flow, calls) -> Module:
    m = Module()
    m.namespace.update(flow=flow, calls=calls)
    return m


def digest(func) -> str:
    return lf.fingerprint(func).digest


# --------------------------------------------------------------------------- the function itself


def test_the_same_code_gives_the_same_fingerprint(module):
    module.run("def f(x):\n    return x + 1\n")
    first = module["f"]
    module.run("def f(x):\n    return x + 1\n")
    assert first is not module["f"]
    assert digest(first) == digest(module["f"])


def test_moving_a_function_to_other_lines_changes_nothing(module):
    module.run("def f(x):\n    return x + 1\n")
    first = digest(module["f"])
    module.run("\n\n\n# a comment\n\ndef f(x):\n    return x + 1\n")
    assert digest(module["f"]) == first


def test_editing_the_body_changes_the_fingerprint(module):
    module.run("def f(x):\n    return x + 1\n")
    first = digest(module["f"])
    module.run("def f(x):\n    return x + 2\n")
    assert digest(module["f"]) != first


def test_default_arguments_count(module):
    module.run("def f(x=1):\n    return x\n")
    first = digest(module["f"])
    module.run("def f(x=2):\n    return x\n")
    assert digest(module["f"]) != first


def test_closure_values_count(module):
    module.run("""
        def make(k):
            def scaled(x):
                return x * k
            return scaled
    """)
    assert digest(module["make"](2)) == digest(module["make"](2))
    assert digest(module["make"](2)) != digest(module["make"](3))


def test_the_version_token_counts(module):
    module.run("def f():\n    return 1\n")
    f = module["f"]
    assert lf.fingerprint(f, extra="1").digest != lf.fingerprint(f, extra="2").digest
    assert lf.fingerprint(f, extra="1").components["version"] == "1"


# --------------------------------------------------------------------------- helpers and globals


def test_editing_a_helper_changes_its_callers_fingerprint(module):
    module.run("def helper(x):\n    return x + 1\n\ndef f(x):\n    return helper(x)\n")
    f, first = module["f"], digest(module["f"])
    module.run("def helper(x):\n    return x + 2\n")
    assert digest(f) != first
    assert "helper:helper" in lf.fingerprint(f).components


def test_helpers_are_followed_transitively_and_through_recursion(module):
    module.run("""
        def leaf(x):
            return x
        def middle(x):
            return leaf(x) if x < 3 else middle(x - 1)
        def top(x):
            return middle(x)
    """)
    first = digest(module["top"])
    module.run("def leaf(x):\n    return -x\n")
    assert digest(module["top"]) != first


def test_rebinding_a_global_it_reads_changes_the_fingerprint(module):
    module.run("FACTOR = 10\ndef f(x):\n    return x * FACTOR\n")
    f, first = module["f"], digest(module["f"])
    module.run("FACTOR = 11")
    assert digest(f) != first
    module.run("FACTOR = 10")
    assert digest(f) == first


def test_mutating_a_global_in_place_changes_the_fingerprint(module):
    module.run("WEIGHTS = [1, 2]\ndef f(x):\n    return x * sum(WEIGHTS)\n")
    f, first = module["f"], digest(module["f"])
    module["WEIGHTS"].append(3)
    assert digest(f) != first


def test_defining_a_global_that_was_missing_changes_the_fingerprint(module):
    module.run("def f(x):\n    return later(x)\n")
    f, first = module["f"], digest(module["f"])
    assert lf.fingerprint(f).components["global:later"] == "<unbound>"
    module.run("def later(x):\n    return x\n")
    assert digest(f) != first


def test_editing_a_class_constant_it_reads_changes_the_fingerprint(module):
    module.run("""
        class Config:
            FACTOR = 10
            def scale(self, x):
                return x * self.FACTOR
        def f(x):
            return Config().scale(x)
    """)
    f, first = module["f"], digest(module["f"])
    module["Config"].FACTOR = 11
    assert digest(f) != first
    assert "class:Config.FACTOR" in lf.fingerprint(f).components


def test_editing_an_unrelated_function_changes_nothing(module):
    module.run("def f(x):\n    return x\n\ndef other():\n    return 1\n")
    first = digest(module["f"])
    module.run("def other():\n    return 2\n")
    assert digest(module["f"]) == first


def test_a_valid_fingerprint_is_served_from_the_memo(module):
    module.run("from numpy import sqrt\nimport math\ndef f(x):\n    return sqrt(x) + math.pi\n")
    assert lf.fingerprint(module["f"]) is lf.fingerprint(module["f"])


def test_a_node_keeps_its_fingerprint_while_it_holds(module, flow):
    module.run("FACTOR = 10\ndef f(x):\n    return x * FACTOR\n")
    flow.node(module["f"])
    node = flow["f"]
    assert node.fingerprint() is node.fingerprint()
    assert node.fingerprint().digest == digest(module["f"])


def test_a_nodes_kept_fingerprint_is_renewed_when_a_global_it_reads_changes(module, flow):
    module.run("FACTOR = 10\ndef f(x):\n    return x * FACTOR\n")
    flow.node(module["f"])
    first = flow["f"].fingerprint()
    module.run("FACTOR = 11")
    renewed = flow["f"].fingerprint()
    assert renewed.digest != first.digest
    assert renewed.digest == digest(module["f"])


# --------------------------------------------------------------------------- installed packages


def test_installed_package_functions_are_keyed_by_package_and_version(module):
    module.run("import numpy as np\nimport json\ndef f(x):\n    return json.dumps(np.mean(x))\n")
    components = lf.fingerprint(module["f"]).components
    assert components["global:np"] == f"numpy=={np.__version__}"
    assert components["global:json"].startswith("json==py")
    assert not [name for name in components if name.startswith("helper:")]


def test_a_function_imported_from_a_package_is_not_walked(module):
    module.run("from json import dumps\ndef f(x):\n    return dumps(x)\n")
    components = lf.fingerprint(module["f"]).components
    assert components["global:dumps"].startswith("json.dumps==py")
    assert list(components) == ["code:f", "global:dumps"]


def test_a_new_package_version_changes_the_fingerprint(module, monkeypatch):
    source = "import numpy as np\ndef f(x):\n    return np.mean(x)\n"
    module.run(source)
    first = digest(module["f"])
    monkeypatch.setattr(importlib.import_module("lazyflow.keys.origin"), "package_version",
                        lambda name: "999.0" if name.startswith("numpy") else "")
    module.run(source)  # a new session: the function is defined afresh
    assert digest(module["f"]) != first


@pytest.fixture
def origin_read_afresh():
    """``lazyflow.keys.origin`` with its folders and verdicts read afresh (each is read once
    per process), and again after the test."""
    origin = importlib.import_module("lazyflow.keys.origin")
    memos = (origin.module_is_installed, origin._package_roots, origin._scheme_roots)
    for memo in memos:
        memo.cache_clear()
    yield origin
    for memo in memos:
        memo.cache_clear()


def test_a_package_counts_as_installed_without_reading_the_install_scheme(origin_read_afresh,
                                                                          monkeypatch):
    # sysconfig.get_paths() loads the build's configuration: ~1 ms of a new process's hit
    import sysconfig

    asked: list[object] = []
    paths = sysconfig.get_paths
    monkeypatch.setattr(sysconfig, "get_paths", lambda *a, **k: asked.append(a) or paths(*a, **k))
    assert origin_read_afresh.module_is_installed("numpy")
    assert asked == []


def test_installed_modules_are_those_under_the_install_scheme_or_site_packages(
        origin_read_afresh, tmp_path, monkeypatch):
    import sysconfig

    (tmp_path / "beside_the_notebook.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("beside_the_notebook")
    scheme = sysconfig.get_paths()
    roots = {scheme[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in scheme}
    roots |= {p for p in sys.path if "site-packages" in p or "dist-packages" in p}
    under = tuple(os.path.realpath(r) for r in roots)
    lazyflow_folder = os.path.dirname(os.path.realpath(lf.__file__)) + os.sep
    files = {name: os.path.realpath(str(m.__file__)) for name, m in list(sys.modules.items())
             if isinstance(getattr(m, "__file__", None), str)
             and not name.startswith(("__main__", "__mp_main__", "lazyflow_cell"))}
    expected = {name: path.startswith(under) or path.startswith(lazyflow_folder)
                or name.partition(".")[0] in sys.builtin_module_names
                for name, path in files.items()}
    assert {name: origin_read_afresh.module_is_installed(name) for name in files} == expected
    assert expected["beside_the_notebook"] is False and expected["json"] is True
    sys.modules.pop("beside_the_notebook")


# --------------------------------------------------------------------------- unhashable globals


def test_an_unhashable_global_makes_the_function_volatile_and_says_why(module):
    module.run("STREAM_A = (i for i in range(3))\ndef f():\n    return STREAM_A\n")
    fp = lf.fingerprint(module["f"])
    assert fp.volatile
    assert "global:STREAM_A" in fp.volatile_reason and "cannot be hashed" in fp.volatile_reason
    assert lf.fingerprint(module["f"]) is not fp  # never served from the memo


def test_a_node_reading_an_unhashable_global_runs_every_time(module, flow, calls):
    module.run("""
        STREAM_B = (i for i in range(3))
        @flow.node
        def reads_stream():
            calls["reads_stream"] += 1
            return STREAM_B is not None
    """)
    with pytest.warns(lf.CacheWarning, match="node 'reads_stream'.*STREAM_B.*not cached"):
        flow.get("reads_stream")
    flow.get("reads_stream")
    assert calls["reads_stream"] == 2
    assert "cannot be hashed" in flow.last_run.nodes["reads_stream"].reason


# --------------------------------------------------------------------------- through a flow


def _pipeline(module: Module) -> None:
    module.run("""
        FACTOR = 10
        def helper(x):
            return x + 1
        @flow.node
        def raw(n: int):
            calls["raw"] += 1
            return list(range(n))
        @flow.node
        def scaled(raw):
            calls["scaled"] += 1
            return [helper(v) * FACTOR for v in raw]
        @flow.node
        def total(scaled):
            calls["total"] += 1
            return sum(scaled)
    """)


def test_editing_a_node_reruns_it_and_its_dependents_only(module, flow, calls):
    _pipeline(module)
    flow.get("total", n=3)
    module.run("""
        @flow.node
        def scaled(raw):
            calls["scaled"] += 1
            return [helper(v) * FACTOR * 2 for v in raw]
    """)
    assert flow.get("total", n=3) == 120
    assert calls == {"raw": 1, "scaled": 2, "total": 2}


def test_editing_a_helper_reruns_its_callers_and_their_dependents(module, flow, calls):
    _pipeline(module)
    flow.get("total", n=3)
    module.run("def helper(x):\n    return x + 2\n")
    assert flow.get("total", n=3) == 90
    assert calls == {"raw": 1, "scaled": 2, "total": 2}


def test_editing_a_global_reruns_its_readers_and_their_dependents(module, flow, calls):
    _pipeline(module)
    flow.get("total", n=3)
    module.run("FACTOR = 11")
    assert flow.get("total", n=3) == 66
    assert calls == {"raw": 1, "scaled": 2, "total": 2}
    assert "global FACTOR" in flow.last_run.nodes["scaled"].reason


def test_editing_an_unrelated_function_reruns_nothing(module, flow, calls):
    _pipeline(module)
    flow.get("total", n=3)
    module.run("def unrelated():\n    return 1\n")
    module.run("def unrelated():\n    return 2\n")
    flow.get("total", n=3)
    assert calls == {"raw": 1, "scaled": 1, "total": 1}


def test_changing_a_nodes_version_reruns_it(module, flow, calls):
    module.run("""
        @flow.node(version="1")
        def load():
            calls["load"] += 1
            return 1
    """)
    flow.get("load")
    module.run("""
        @flow.node(version="2")
        def load():
            calls["load"] += 1
            return 1
    """)
    flow.get("load")
    assert calls["load"] == 2
    assert "version=" in flow.last_run.nodes["load"].reason
