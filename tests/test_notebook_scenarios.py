"""Notebook scenarios through a real IPython shell: cells re-run, redefine and rebind all the time."""

from __future__ import annotations

import textwrap

import pytest
from IPython.core.interactiveshell import InteractiveShell

import lazyflow as lf
import lazyflow.api


class Notebook:
    """A real IPython ``InteractiveShell`` running cells, with execution counts."""

    def __init__(self, shell: InteractiveShell, calls) -> None:
        self.shell = shell
        self.calls = calls

    def cell(self, source: str):
        result = self.shell.run_cell(textwrap.dedent(source), store_history=True)
        result.raise_error()
        return result.result

    def error(self, source: str) -> BaseException:
        result = self.shell.run_cell(textwrap.dedent(source), store_history=True)
        assert not result.success
        return result.error_in_exec


@pytest.fixture(scope="module")
def shell():
    return InteractiveShell.instance()


@pytest.fixture
def nb(shell, calls) -> Notebook:
    shell.reset(new_session=True)
    shell.user_ns["calls"] = calls  # hashes to a constant: reading it invalidates nothing
    notebook = Notebook(shell, calls)
    notebook.cell("""
        import lazyflow as lf
        flow = lf.Flow("notebook", cache=lf.Cache(disk=None))
    """)
    return notebook


PIPELINE = """
    FACTOR = 10

    def bump(x):
        return x + 1

    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @flow.node
    def scaled(raw):
        calls["scaled"] += 1
        return [bump(v) * FACTOR for v in raw]

    @flow.node
    def total(scaled):
        calls["total"] += 1
        return sum(scaled)
"""


def test_nodes_defined_in_a_cell_run_once_and_then_hit(nb):
    nb.cell(PIPELINE)
    assert nb.cell("flow.get('total', n=3)") == 60
    assert nb.cell("flow.get('total', n=3)") == 60
    assert nb.calls == {"raw": 1, "scaled": 1, "total": 1}
    assert nb.cell("flow.last_run.nodes['total'].status") == "cached"


def test_re_running_an_unchanged_cell_keeps_everything_cached(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell(PIPELINE)  # a new cell number, new function objects, the same code
    nb.cell("flow.get('total', n=3)")
    assert nb.calls == {"raw": 1, "scaled": 1, "total": 1}


def test_re_running_a_cell_with_an_edited_node_reruns_it_and_dependents(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("""
        @flow.node
        def scaled(raw):
            calls["scaled"] += 1
            return [bump(v) * FACTOR * 2 for v in raw]
    """)
    assert nb.cell("flow.get('total', n=3)") == 120
    assert nb.calls == {"raw": 1, "scaled": 2, "total": 2}


def test_rebinding_a_global_in_a_cell_reruns_its_readers(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("FACTOR = 11")
    assert nb.cell("flow.get('total', n=3)") == 66
    assert nb.calls == {"raw": 1, "scaled": 2, "total": 2}
    nb.cell("FACTOR = 11")  # the same value again: nothing to do
    nb.cell("flow.get('total', n=3)")
    assert nb.calls == {"raw": 1, "scaled": 2, "total": 2}


def test_setting_a_global_back_is_served_from_the_cache(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("FACTOR = 11")
    nb.cell("flow.get('total', n=3)")
    nb.cell("FACTOR = 10")
    assert nb.cell("flow.get('total', n=3)") == 60
    assert nb.calls == {"raw": 1, "scaled": 2, "total": 2}
    assert nb.cell("flow.last_run.nodes['total'].status") == "cached"


def test_editing_a_helper_in_its_own_cell_reruns_its_callers(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("""
        def bump(x):
            return x + 2
    """)
    assert nb.cell("flow.get('total', n=3)") == 90
    assert nb.calls == {"raw": 1, "scaled": 2, "total": 2}
    assert "helper bump" in nb.cell("flow.last_run.nodes['scaled'].reason")


def test_defining_an_unrelated_function_reruns_nothing(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("def plot(values):\n    return len(values)\n")
    nb.cell("def plot(values):\n    return max(values)\n")
    nb.cell("flow.get('total', n=3)")
    assert nb.calls == {"raw": 1, "scaled": 1, "total": 1}


def test_an_upstream_edit_that_returns_an_equal_value_stops_at_that_node(nb):
    nb.cell(PIPELINE)
    nb.cell("flow.get('total', n=3)")
    nb.cell("""
        @flow.node
        def raw(n: int):
            calls["raw"] += 1
            return [v for v in range(n)]  # rewritten, same result
    """)
    nb.cell("flow.get('total', n=3)")
    assert nb.calls == {"raw": 2, "scaled": 1, "total": 1}


def test_a_failing_cell_fixed_and_re_run_resumes_where_it_stopped(nb):
    nb.cell(PIPELINE)
    nb.cell("""
        @flow.node
        def report(total):
            calls["report"] += 1
            return 1 / 0
    """)
    error = nb.error("flow.get('report', n=3)")
    assert isinstance(error, ZeroDivisionError)
    assert any("node 'report'" in note for note in error.__notes__)
    nb.cell("""
        @flow.node
        def report(total):
            calls["report"] += 1
            return f"total={total}"
    """)
    assert nb.cell("flow.get('report', n=3)") == "total=60"
    assert nb.calls == {"raw": 1, "scaled": 1, "total": 1, "report": 2}


def test_lf_node_registers_on_the_notebooks_default_flow(nb, monkeypatch):
    monkeypatch.setattr(lazyflow.api, "_DEFAULT_FLOW", lf.Flow("default", cache=lf.Cache(disk=None)))
    nb.cell("""
        @lf.node
        def greeting(name: str = "world"):
            calls["greeting"] += 1
            return f"hello {name}"
    """)
    assert nb.cell("lf.default_flow().get('greeting')") == "hello world"
    assert nb.cell("lf.default_flow().get('greeting')") == "hello world"
    assert nb.calls == {"greeting": 1}
