"""The examples in lazyflow's docstrings run as written.

One test per module of the package, found from its files (importing nothing to collect):
a module whose optional dependency is not installed (``ipywidgets`` for the widget, say)
is skipped, naming the dependency, and never breaks collection. Examples that need what a
docstring cannot build (a user's flow, a notebook, a cluster) say ``# doctest: +SKIP``.
"""

from __future__ import annotations

import doctest
import importlib
import pathlib
from types import ModuleType

import pytest

import lazyflow

PACKAGE = pathlib.Path(lazyflow.__file__).parent
MODULES = sorted(
    ".".join(("lazyflow", *path.relative_to(PACKAGE).with_suffix("").parts))
    .removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py"))


def _import(name: str) -> ModuleType:
    """The module, or a skip when a package it needs (not lazyflow itself) is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing = e.name or ""
        if missing and missing.split(".")[0] != "lazyflow":
            pytest.skip(f"{name} needs {missing}, which is not installed")
        raise


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_of_each_module_run_as_written(name):
    module = _import(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)


def test_every_module_of_the_package_is_checked():
    assert {"lazyflow", "lazyflow.keys.hashing", "lazyflow.cache.remote",
            "lazyflow.notebook.widget", "lazyflow.executors.dask"} <= set(MODULES)
