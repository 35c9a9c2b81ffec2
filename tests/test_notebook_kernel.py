"""``%%flow`` cells in a real kernel: "restart kernel and Run All" restores from disk.

The same notebook is executed twice by nbclient, each time in a fresh kernel
(a restart), with a flow whose cache has a disk tier: one given with
``--flow``, and the notebook's default flow (disk tier from the defaults). Executions are counted
by lines appended to a log file: the second Run All must add none. The log's
path is pushed as a hidden name, so it is the harness's, not
an input of the cells that write to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook


def _hidden_log(log: Path) -> str:
    """Source that binds ``log`` as a hidden name of the kernel's shell."""
    return f"get_ipython().push({{'log': {str(log)!r}}}, interactive=False)"


def _notebook(setup: str, log: Path, magic: str, decorator: str, flow: str
              ) -> nbformat.NotebookNode:
    count = "with open(log, 'a') as fh:\n    fh.write('{}\\n')\n"
    return new_notebook(cells=[
        new_code_cell(f"%load_ext lazyflow\nimport lazyflow as lf\n{setup}\n"
                      f"{_hidden_log(log)}\nbase = 2"),
        new_code_cell(f"{magic}\n" + count.format("a") + "a = 10 * base\nprint('a is', a)"),
        new_code_cell(f"{magic}\n" + count.format("b") + "b = a + 1"),
        new_code_cell(f"{decorator}\ndef c(b):\n    with open(log, 'a') as fh:\n"
                      "        fh.write('c\\n')\n    return 2 * b\n\n"
                      f"print('c is', {flow}.get('c'))"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})


def _execute(nb: nbformat.NotebookNode, cwd: Path) -> nbformat.NotebookNode:
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _run_all(nb: nbformat.NotebookNode, cwd: Path) -> list[str]:
    """Execute every cell in a fresh kernel; return each code cell's stdout."""
    _execute(nb, cwd)
    return ["".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
            for c in nb.cells]


def _restart_and_run_all_twice(make: Callable[[], nbformat.NotebookNode], log: Path,
                               cwd: Path) -> None:
    first = _run_all(make(), cwd)
    assert log.read_text().split() == ["a", "b", "c"]
    assert first[1] == "a is 20\n" and first[3] == "c is 42\n"

    second = _run_all(make(), cwd)
    assert log.read_text().split() == ["a", "b", "c"]  # nothing ran again
    assert second[1].startswith("lazyflow: a restored from the disk cache")
    assert second[1].endswith("a is 20\n")  # stdout of the first run, replayed
    assert second[2].startswith("lazyflow: b restored from the disk cache")
    assert second[3] == "c is 42\n"


@pytest.mark.slow
def test_restart_and_run_all_restores_every_cell_and_node_from_disk(tmp_path):
    disk, log = tmp_path / "cache", tmp_path / "log"
    setup = f"nb = lf.Flow('restart', cache=lf.Cache(disk={str(disk)!r}))"
    _restart_and_run_all_twice(
        lambda: _notebook(setup, log, "%%flow --flow nb", "@nb.node", "nb"), log, tmp_path)


@pytest.mark.slow
def test_restart_and_run_all_restores_the_notebooks_default_flow_from_disk(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("LAZYFLOW_CACHE_DIR", str(tmp_path / "cache"))  # the kernels inherit it
    log = tmp_path / "log"
    _restart_and_run_all_twice(
        lambda: _notebook("", log, "%%flow", "@lf.node", "lf.default_flow()"), log, tmp_path)
    assert any((tmp_path / "cache").iterdir())


WIDGET = "application/vnd.jupyter.widget-view+json"


def test_display_flow_progress_and_flow_show_put_the_widget_in_the_output(tmp_path):
    nb = _execute(new_notebook(cells=[
        new_code_cell("import lazyflow as lf\nflow = lf.Flow('k', cache=lf.Cache(disk=None))\n"
                      "flow.node(name='a')(lambda: 41)\nflow.node(name='b')(lambda a: a + 1)"),
        new_code_cell("flow"),
        new_code_cell("flow.get('b', progress=True)"),
        new_code_cell("%load_ext lazyflow\n%flow show --flow flow"),
    ]), tmp_path)
    shown = [[o for o in c.outputs if o.output_type in ("execute_result", "display_data")]
             for c in nb.cells]
    flow_out, = shown[1]
    assert WIDGET in flow_out.data and 'data-node="b"' in flow_out.data["text/html"]
    progress, value = shown[2]
    assert WIDGET in progress.data and value.data["text/plain"] == "42"
    show, = shown[3]
    assert WIDGET in show.data and show.data["text/plain"] == "<FlowWidget of flow 'k': 2 nodes>"


def _plot_notebook(disk: Path, log: Path) -> nbformat.NotebookNode:
    return new_notebook(cells=[
        new_code_cell(f"%load_ext lazyflow\nimport lazyflow as lf\n"
                      f"nb = lf.Flow('plots', cache=lf.Cache(disk={str(disk)!r}))\n"
                      f"{_hidden_log(log)}"),
        new_code_cell("%%flow --flow nb\nwith open(log, 'a') as fh:\n    fh.write('plot\\n')\n"
                      "import matplotlib.pyplot as plt\nfrom IPython.display import HTML, display\n"
                      "squares = [1, 4, 9]\nprint('plotting', len(squares))\n"
                      "display(HTML('<b>three points</b>'))\nplt.plot(squares)"),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                "language": "python"}})


def _shown(cell: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(kind, content) of each output: stream text, or the richest mimetype of a display."""
    out = []
    for o in cell.outputs:
        if o.output_type == "stream":
            out.append(("text", o.text))
        else:
            mime = next(m for m in ("image/png", "text/html", "text/plain") if m in o.data)
            out.append((mime, o.data[mime]))
    return out


@pytest.mark.slow
def test_a_restored_cell_shows_its_text_tables_and_figures_again(tmp_path):
    disk, log = tmp_path / "cache", tmp_path / "log"
    first = _shown(_execute(_plot_notebook(disk, log), tmp_path).cells[1])
    assert [kind for kind, _ in first] == ["text", "text/html", "image/png"]
    second = _shown(_execute(_plot_notebook(disk, log), tmp_path).cells[1])  # a fresh kernel
    assert log.read_text().split() == ["plot"]
    (_, text), *displays = second  # the notice and the replayed text share one stream
    assert text.startswith("lazyflow: squares restored from the disk cache")
    assert text.endswith("\n" + first[0][1])
    assert displays == first[1:]  # the same table and figure, in the same order
