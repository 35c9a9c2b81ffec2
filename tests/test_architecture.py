"""The layers: imports point down, importing lazyflow has no side effects.

Every module's imports are read with ``ast`` (function-local ones included:
an import hidden in a function is still a dependency; ``if TYPE_CHECKING:``
blocks excluded, they never run) and each module is given a layer from
:data:`LAYERS`. An import may stay in its layer or point down, never up: a low
module that needs to tell a high one something exposes a hook the high one
fills in (``run.register_html``), or emits an event.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lazyflow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lazyflow"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lazyflow._version", "lazyflow.errors", "lazyflow.records")),
    ("keys", ("lazyflow.keys",)),
    ("cache", ("lazyflow.cache",)),
    ("model", ("lazyflow.model",)),
    # executors only call functions (under a node's policy): they know no graph, run or
    # engine. Below the results, also because importing executors.base runs the
    # package's __init__ (sync, threads)
    ("executors", ("lazyflow.executors",)),
    ("results", ("lazyflow.run",)),
    ("engine", ("lazyflow.engine",)),
    ("services", ("lazyflow.history", "lazyflow.provenance", "lazyflow.watch",
                  "lazyflow.subflow", "lazyflow.handle")),
    ("render", ("lazyflow.render",)),
    ("notebook views", ("lazyflow.notebook",)),
    ("facade", ("lazyflow.api",)),
    # the front ends use Flow itself: %%flow registers cells on the default flow, the CLI
    # finds the flows of a script, headless reruns notebooks (and reads %%flow's notice)
    ("front ends", ("lazyflow.notebook.magics", "lazyflow.headless", "lazyflow.cli",
                    "lazyflow")),
]
"""Layers from the bottom; a name covers its submodules unless they are listed themselves."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
"""(importer, imported): why. Keep it to a few named lines; today none is needed."""

_RANK = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer: its own entry, else its nearest listed package's."""
    name = module
    while name not in _RANK:
        name = name.rpartition(".")[0]
        if name in ("", "lazyflow"):  # the package entry covers __init__ only
            raise KeyError(f"{module} has no layer: add it to LAYERS in {__file__}")
    return _RANK[name]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collect ``(imported module, line)`` for every lazyflow import that runs."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[str, int]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):  # never runs: for type checkers only
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolve against this module's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            # ``from pkg import sub`` depends on the submodule; ``from pkg import name``
            # on the package (every submodule import runs its parents' __init__ anyway)
            sub = f"{base}.{alias.name}"
            self._add(sub if sub in MODULES else base, node.lineno)

    def _add(self, name: str, line: int) -> None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != self.module:
            self.found.append((name, line))


def imports(module: str) -> list[tuple[str, int]]:
    """The lazyflow modules ``module`` imports, with the line of each import."""
    path = MODULES[module]
    visitor = _Imports(module, path.name == "__init__.py")
    visitor.visit(ast.parse(path.read_text(), str(path)))
    return visitor.found


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_points_up_a_layer():
    upward = []
    for module in sorted(MODULES):
        for imported, line in imports(module):
            if layer_of(imported) > layer_of(module) and (module, imported) not in ALLOWED_UPWARD:
                upward.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} "
                              f"({LAYERS[layer_of(module)][0]}) imports {imported} "
                              f"({LAYERS[layer_of(imported)][0]})")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_every_allowed_upward_import_still_exists():
    for module, imported in ALLOWED_UPWARD:
        assert imported in {name for name, _ in imports(module)}, (module, imported)


def test_no_modules_import_each_other_in_a_cycle():
    edges = {m: {name for name, _ in imports(m)} for m in MODULES}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


# --------------------------------------------------------------------------- the package


def _exports_typed() -> dict[str, str]:
    """Name -> module, as the package's ``if TYPE_CHECKING:`` imports say."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in ast.walk(node):
                if isinstance(child, ast.ImportFrom):
                    typed.update({a.asname or a.name: child.module for a in child.names})
    return typed


def test_the_lazy_exports_type_checking_imports_and_all_name_the_same_things():
    typed = _exports_typed()
    assert set(lazyflow._EXPORTS) == set(typed)
    assert set(lazyflow.__all__) == {*typed, "load_ipython_extension"}
    for name, module in typed.items():
        assert getattr(lazyflow, name) is getattr(importlib.import_module(module), name), name


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'Flwo'"):
        lazyflow.Flwo  # noqa: B018


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _loaded_by(module: str) -> list[str]:
    """The lazyflow submodules a fresh interpreter has loaded after ``import module``."""
    return _python(f"""
        import sys
        import {module}
        print(*sorted(m for m in sys.modules if m.startswith("lazyflow.")))
        """).split()


def test_import_lazyflow_loads_no_submodule():
    out = _python("""
        import sys
        import lazyflow
        print(sorted(m for m in sys.modules if m.startswith("lazyflow")))
        """)
    assert out.strip() == "['lazyflow']"


# the static test cannot see this: importing a module runs its parent packages' __init__
@pytest.mark.parametrize("module", ["lazyflow.errors", "lazyflow.keys.hashing", "lazyflow.keys.fingerprint",
                                    "lazyflow.cache", "lazyflow.executors.base",
                                    "lazyflow.model.graph", "lazyflow.run", "lazyflow.engine"])
def test_importing_a_module_loads_nothing_above_its_layer(module):
    loaded = _loaded_by(module)
    assert [m for m in loaded if layer_of(m) > layer_of(module)] == []


def test_a_worker_importing_hashing_loads_neither_the_engine_nor_the_graph():
    loaded = _loaded_by("lazyflow.keys.hashing")
    assert "lazyflow.engine" not in loaded and "lazyflow.model.graph" not in loaded


def test_loading_the_whole_public_api_starts_no_thread_and_subscribes_nothing():
    out = _python("""
        import threading
        import lazyflow
        from lazyflow.engine.events import GLOBAL
        for name in lazyflow.__all__:
            getattr(lazyflow, name)
        flow = lazyflow.Flow("quiet", cache=None)
        print(threading.active_count(), bool(GLOBAL))
        """)
    assert out.split() == ["1", "False"]


def test_the_run_history_subscribes_on_the_first_run_and_records_it():
    out = _python("""
        import lazyflow as lf
        from lazyflow.engine.events import GLOBAL
        flow = lf.Flow("first", cache=None)
        @flow.node
        def one():
            return 1
        before = bool(GLOBAL)
        run = flow.run("one")
        print(before, bool(GLOBAL), [r.id for r in lf.history(flow)] == [run.id])
        """)
    assert out.split() == ["False", "True", "True"]


def test_history_and_fingerprint_stay_functions_once_their_modules_are_imported():
    out = _python("""
        import sys
        import lazyflow as lf
        import lazyflow.keys.fingerprint
        import lazyflow.history
        print(lf.history is sys.modules["lazyflow.history"].history,
              lf.fingerprint is sys.modules["lazyflow.keys.fingerprint"].fingerprint)
        """)
    assert out.split() == ["True", "True"]


def test_lf_hash_value_hashes_functions_and_classes_in_a_fresh_process():
    out = _python("""
        import collections
        import lazyflow as lf
        Point = collections.namedtuple("Point", "x y")
        print(len(lf.hash_value(len)), len(lf.hash_value(Point(1, 2))))
        """)
    assert out.split() == ["32", "32"]


def test_a_worker_importing_only_its_executor_hashes_functions_and_classes():
    out = _python("""
        import collections
        import lazyflow.executors.processes
        from lazyflow.keys.hashing import hash_value
        Point = collections.namedtuple("Point", "x y")
        print(len(hash_value(len)), len(hash_value(Point(1, 2))))
        """)
    assert out.split() == ["32", "32"]


def test_the_version_is_the_installed_distributions():
    from importlib.metadata import version

    assert lazyflow.__version__ == version("lazyflow")


def test_every_lazyflow_module_counts_as_installed_code_never_as_the_users():
    """Nodes reading lf.File or any lazyflow object are keyed by lazyflow's version: walking
    lazyflow's own modules as user code would key them by its private state (a module-level
    cache), so a hit would become a miss whenever that state moved — wherever the module sits."""
    from lazyflow.keys.origin import module_is_installed

    for module in MODULES:
        importlib.import_module(module)
        assert module_is_installed(module), module


def test_the_package_pickles_by_name_so_nodes_reading_lf_reach_worker_processes():
    import pickle

    import cloudpickle

    assert pickle.loads(cloudpickle.dumps(lazyflow)) is lazyflow
