"""Where nodes are defined, in a real IPython shell and in files.

A node defined again from another place (another cell, another file or line)
replaces the old one with a warning naming both places; the same definition
run again (an edited cell re-run) replaces it silently. Cells are run with a
``cell_id`` and stored in the history, as Jupyter front ends run them. The
notebook's own flow is named after the notebook; a failing node's traceback
shows the user's frames, not lazyflow's.
"""

from __future__ import annotations

import pathlib
import re
import sys

import pytest

import lazyflow as lf
import lazyflow.api

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def nb(shell):
    """The shell with a flow ``nb`` (memory cache) in its namespace."""
    shell.user_ns["nb"] = lf.Flow("nb", cache=lf.Cache(disk=None))
    return shell


@pytest.fixture
def own_flow(monkeypatch):
    """A fresh notebook flow: the next ``lf.default_flow()`` builds it again."""
    monkeypatch.setattr(lazyflow.api, "_DEFAULT_FLOW", None)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def run(shell, source: str, cell_id: str | None) -> None:
    """Run ``source`` as the cell ``cell_id`` of a notebook; fail the test on any error
    (a warning too: pytest turns lazyflow's warnings into errors)."""
    shell.run_cell(source, store_history=True, cell_id=cell_id).raise_error()


# --------------------------------------------------------------------------- %%flow cells


def test_a_flow_cell_named_like_another_cells_output_warns_naming_both_cells(nb):
    run(nb, "%%flow --flow nb\nsummary = 1\n", "first")
    first = nb.execution_count - 1
    with pytest.warns(lf.DefinitionWarning) as warned:
        run(nb, "%%flow --flow nb\nsummary = 2\n", "second")
    message = str(warned[0].message)
    assert message.startswith(f"node 'cell_summary' defined in cell In[{first + 1}] replaces "
                              f"node 'cell_summary' defined in cell In[{first}]")
    assert "%%flow --name NAME" in message


def test_rerunning_an_edited_flow_cell_replaces_its_node_silently(nb):
    run(nb, "%%flow --flow nb\nsummary = 1\n", "first")
    run(nb, "%%flow --flow nb\nsummary = 1 + 1\n", "first")
    assert nb.user_ns["summary"] == 2


def test_the_replacement_warning_points_at_the_replacing_cell(nb):
    run(nb, "%%flow --flow nb\nsummary = 1\n", "first")
    with pytest.warns(lf.DefinitionWarning) as warned:
        run(nb, "%%flow --flow nb\nsummary = 2\n", "second")
    assert nb.compile.format_code_name(warned[0].filename) == ("Cell",
                                                               f"In[{nb.execution_count - 1}]")


def test_without_cell_ids_a_redefinition_is_not_warned_about(nb):
    run(nb, "%%flow --flow nb\nsummary = 1\n", None)  # a terminal IPython sends no cell id
    run(nb, "%%flow --flow nb\nsummary = 2\n", None)
    assert nb.user_ns["summary"] == 2


# --------------------------------------------------------------------------- functions in cells


CLEAN = "@nb.node\ndef clean(n: int = 1):\n    return n * {factor}\n"


def test_a_node_function_defined_again_in_another_cell_warns_naming_both(nb):
    run(nb, CLEAN.format(factor=1), "a")
    with pytest.warns(lf.DefinitionWarning, match=r"node 'clean' defined in cell In\[\d+\] "
                                                  r"replaces node 'clean' defined in cell "
                                                  r"In\[\d+\]"):
        run(nb, "\n\n" + CLEAN.format(factor=2), "b")
    assert nb.user_ns["nb"].get("clean") == 2


def test_a_node_function_rerun_in_its_own_cell_does_not_warn(nb):
    run(nb, CLEAN.format(factor=1), "a")
    run(nb, "# edited\n" + CLEAN.format(factor=3), "a")
    assert nb.user_ns["nb"].get("clean") == 3


def test_lf_node_warns_the_same_way_on_the_notebooks_own_flow(shell, own_flow):
    run(shell, "import lazyflow as lf\n@lf.node\ndef total():\n    return 1\n", "a")
    with pytest.warns(lf.DefinitionWarning, match="node 'total' defined in cell"):
        run(shell, "@lf.node\ndef total():\n    return 2\n", "b")


# --------------------------------------------------------------------------- functions in files


def test_a_node_defined_again_at_another_line_of_a_file_warns_naming_both_lines():
    flow = lf.Flow("files", cache=None)

    @flow.node
    def value():
        return 1

    first = value.__code__.co_firstlineno
    with pytest.warns(lf.DefinitionWarning) as warned:
        @flow.node
        def value():  # noqa: F811 - the second definition is the point
            return 2

    here = "tests/test_notebook_sites.py"
    assert str(warned[0].message).startswith(
        f"node 'value' defined in {here}:{value.__code__.co_firstlineno} replaces node "
        f"'value' defined in {here}:{first}")
    assert (warned[0].filename, warned[0].lineno) == (__file__, value.__code__.co_firstlineno)


def test_a_file_site_is_named_relative_to_the_working_directory_at_its_definition(
        monkeypatch):
    flow = lf.Flow("files", cache=None)

    @flow.node
    def value():
        return 1

    first = value.__code__.co_firstlineno
    monkeypatch.chdir(pathlib.Path(__file__).parent)  # file places are memoised per directory
    with pytest.warns(lf.DefinitionWarning) as warned:
        @flow.node
        def value():  # noqa: F811 - the second definition is the point
            return 2

    assert str(warned[0].message).startswith(
        f"node 'value' defined in test_notebook_sites.py:{value.__code__.co_firstlineno} "
        f"replaces node 'value' defined in tests/test_notebook_sites.py:{first}")


def _define(flow: lf.Flow, result: int) -> None:
    @flow.node
    def value():
        return result


def test_the_same_definition_run_again_does_not_warn():
    flow = lf.Flow("files", cache=None)
    _define(flow, 1)
    _define(flow, 2)  # one file and line: a module reloaded, a helper called again
    assert flow.get("value") == 2


def test_a_removed_node_defined_elsewhere_is_no_replacement():
    flow = lf.Flow("files", cache=None)
    flow.node(name="value")(lambda: 1)
    flow.remove("value")
    flow.node(name="value")(lambda: 2)
    assert flow.get("value") == 2


# --------------------------------------------------------------------------- the notebook's flow


@pytest.mark.parametrize("variable", ["__session__", "__vsc_ipynb_file__"])
def test_the_notebooks_flow_is_named_after_the_notebook(shell, own_flow, variable):
    shell.user_ns[variable] = "/home/ada/projects/churn analysis.ipynb"
    assert lf.default_flow().name == "churn analysis"


def test_the_notebook_name_can_come_from_jupyters_environment(shell, own_flow, monkeypatch):
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/notebooks/report.ipynb")
    assert lf.default_flow().name == "report"


def test_without_a_notebook_path_the_flow_is_called_default(shell, own_flow):
    shell.user_ns["__session__"] = "console-1"  # a console: not a notebook's path
    assert lf.default_flow().name == "default"


def test_flow_cells_join_the_flow_named_after_their_notebook(shell, own_flow):
    shell.user_ns["__session__"] = "/work/analysis.ipynb"
    run(shell, "%%flow\nsummary = 40 + 2\n", "a")
    assert lf.default_flow().name == "analysis"
    assert lf.default_flow().last_run.flow == "analysis"


# --------------------------------------------------------------------------- tracebacks


FAILING = """\
import lazyflow as lf
flow = lf.Flow("t", cache=None)

@flow.node
def raw(n: int):
    return n

@flow.node
def boom(raw):
    raise ValueError("row 3 is malformed")
"""


def _traceback_of(shell, capsys, source: str) -> tuple[BaseException, str]:
    run(shell, FAILING, "setup")
    capsys.readouterr()
    result = shell.run_cell(source, store_history=True, cell_id="failing")
    return result.error_in_exec, ANSI.sub("", capsys.readouterr().out)


def test_a_node_error_in_a_notebook_shows_the_users_frames_not_lazyflows(shell, capsys):
    error, shown = _traceback_of(shell, capsys, "flow.get('boom', n=1)")
    assert "skipping hidden" in shown
    assert "lazyflow/" not in shown
    assert "----> 1 flow.get('boom', n=1)" in shown
    assert 'raise ValueError("row 3 is malformed")' in shown


def test_the_error_keeps_its_type_and_the_note_naming_the_node(shell, capsys):
    error, shown = _traceback_of(shell, capsys, "flow.get('boom', n=1)")
    assert type(error) is ValueError
    assert "lazyflow: raised in node 'boom' of flow 't'" in shown
    if sys.version_info >= (3, 11):
        assert error.__notes__ == ["lazyflow: raised in node 'boom' of flow 't' "
                                   "(requested via boom)"]


def test_a_failing_flow_cell_shows_its_own_line_not_lazyflows(shell, capsys):
    error, shown = _traceback_of(shell, capsys, "%%flow\nratio = 1 / 0\n")
    assert type(error) is ZeroDivisionError
    assert "lazyflow/" not in shown
    assert "----> 1 ratio = 1 / 0" in shown
