"""``%%flow`` cells attacked: after each change, is a hit what the cell would compute now?

The changes are a notebook's: a helper redefined in another cell, a local module
edited and reloaded (or read by a new kernel), a builtin shadowed, a name defined
after the cell, a value read through ``eval``. Each runs in a real IPython shell;
the new-kernel case in a new process sharing the disk cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lazyflow as lf


@pytest.fixture
def nb(shell):
    """The shell with a flow ``nb`` (memory cache) in its namespace."""
    shell.user_ns["nb"] = lf.Flow("nb", cache=lf.Cache(disk=None))
    return shell


def cell(shell, source: str, options: str = "--flow nb") -> None:
    """Run ``source`` as a ``%%flow`` cell; fail the test on any error."""
    shell.run_cell(f"%%flow {options}\n{source}").raise_error()


def plain(shell, source: str) -> None:
    """Run ``source`` as an ordinary cell; fail the test on any error."""
    shell.run_cell(textwrap.dedent(source)).raise_error()


@pytest.fixture
def local_module(tmp_path, monkeypatch):
    """A module file ``scaling.py`` in ``tmp_path``, importable; write to it to edit it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "scaling.py"
    path.write_text("def scale(x):\n    return 10 * x\n")
    yield path
    sys.modules.pop("scaling", None)


# --------------------------------------------------------------------------- stale, now fixed


def test_a_cell_requested_after_its_helper_was_redefined_computes_with_its_own_helper(nb):
    plain(nb, "def scale(x):\n    return 10 * x\n")
    cell(nb, "y = scale(2)")
    cell(nb, "c = y + 1")
    plain(nb, "def scale(x):\n    return 100 * x\n")
    nb.user_ns["nb"].cache.clear()
    cell(nb, "c = y + 1")  # computes cell_y again, on behalf of this cell
    assert nb.user_ns["c"] == 21
    plain(nb, "def scale(x):\n    return 10 * x\n")
    cell(nb, "y = scale(2)")
    assert nb.user_ns["y"] == 20


def test_a_cell_reading_a_reloaded_local_module_runs_again(nb, local_module):
    plain(nb, "import scaling")
    cell(nb, "y = scaling.scale(3)")
    local_module.write_text("def scale(x):\n    return 1000 * x\n")
    plain(nb, "import importlib\nimportlib.reload(scaling)")
    cell(nb, "y = scaling.scale(3)")
    assert nb.user_ns["y"] == 3000


def test_a_cell_importing_a_reloaded_local_module_runs_again(nb, local_module):
    source = "import scaling\ny = scaling.scale(3)"
    cell(nb, source)
    local_module.write_text("def scale(x):\n    return 1000 * x\n")
    plain(nb, "import importlib, scaling\nimportlib.reload(scaling)")
    cell(nb, source)
    assert nb.user_ns["y"] == 3000


def in_new_kernel(tmp_path: Path, cells: list[str]) -> dict[str, object]:
    """Run ``cells`` (``%%flow`` cells) in a new process's IPython shell over ``tmp_path``'s
    disk cache, with ``tmp_path`` importable; return ``y`` and whether the last cell was
    restored."""
    script = tmp_path / "kernel.py"
    script.write_text(textwrap.dedent("""\
        import io, json, sys, warnings
        from contextlib import redirect_stdout
        from IPython.core.interactiveshell import InteractiveShell
        import lazyflow as lf
        warnings.simplefilter("ignore", lf.LazyflowWarning)
        sys.path.insert(0, sys.argv[1])
        shell = InteractiveShell.instance()
        shell.extension_manager.load_extension("lazyflow")
        shell.user_ns["nb"] = lf.Flow("nb", cache=lf.Cache(disk=sys.argv[1] + "/cache"))
        for source in json.loads(sys.argv[2]):
            out = io.StringIO()  # what the last cell printed: "... restored from ..." on a hit
            with redirect_stdout(out):
                shell.run_cell("%%flow --flow nb\\n" + source).raise_error()
        print(json.dumps({"y": shell.user_ns["y"], "restored": "restored" in out.getvalue()}))
        """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path), json.dumps(cells)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("cells", [
    ["import scaling\ny = scaling.scale(3)"],
    ["import scaling", "y = scaling.scale(3)"],
], ids=["imported-in-the-cell", "imported-in-another-cell"])
def test_a_new_kernel_does_not_restore_a_cell_whose_local_module_file_changed(
        tmp_path, cells):
    module = tmp_path / "scaling.py"
    module.write_text("def scale(x):\n    return 10 * x\n")
    assert in_new_kernel(tmp_path, cells) == {"y": 30, "restored": False}
    assert in_new_kernel(tmp_path, cells) == {"y": 30, "restored": True}
    module.write_text("def scale(x):\n    return 7 * x\n")
    assert in_new_kernel(tmp_path, cells) == {"y": 21, "restored": False}


def test_a_builtin_shadowed_after_the_cell_was_defined_does_not_change_what_it_computes(nb):
    cell(nb, "s = len([1, 2, 3])")
    cell(nb, "t = s + 1")
    plain(nb, "len = lambda items: 99")
    nb.user_ns["nb"].cache.clear()
    cell(nb, "t = s + 1")  # computes cell_s again, on behalf of this cell
    assert nb.user_ns["t"] == 4
    plain(nb, "del len")
    cell(nb, "s = len([1, 2, 3])")
    assert nb.user_ns["s"] == 3


def test_a_name_defined_after_a_cell_failed_on_it_does_not_feed_the_cells_stored_result(nb):
    assert isinstance(nb.run_cell("%%flow --flow nb\nu = later + 1").error_in_exec, NameError)
    plain(nb, "later = 5")
    # cell_u is what the cell was: it reads no 'later', so it cannot give a result that
    # lives on, unkeyed, after 'later' changes; running the cell again defines it anew
    assert isinstance(nb.run_cell("%%flow --flow nb\nw = u * 2").error_in_exec, NameError)
    cell(nb, "u = later + 1")
    cell(nb, "w = u * 2")
    plain(nb, "later = 100")
    cell(nb, "u = later + 1")
    cell(nb, "w = u * 2")
    assert nb.user_ns["w"] == 202


def test_a_cell_calling_a_helper_that_reads_names_through_eval_is_not_cached(nb):
    plain(nb, "K = 1\ndef k():\n    return eval('K')\n")
    with pytest.warns(lf.CacheWarning, match="eval"):
        cell(nb, "y = k()")
    plain(nb, "K = 2")
    with pytest.warns(lf.CacheWarning, match="eval"):  # the cell's node, defined anew
        cell(nb, "y = k()")
    assert nb.user_ns["y"] == 2


def test_a_flow_as_a_node_over_a_cell_follows_the_value_the_cell_read(nb):
    nb.user_ns["x"] = 1
    cell(nb, "y = 2 * x")
    outer = lf.Flow("outer", cache=nb.user_ns["nb"].cache)
    outer.add(nb.user_ns["nb"].as_node("y", name="doubled"))
    assert outer.get("doubled") == 2
    nb.user_ns["x"] = 5
    cell(nb, "y = 2 * x")
    assert outer.get("doubled") == 10


# --------------------------------------------------------------------------- correct: guards


def test_an_edited_upstream_cell_run_again_reruns_the_cell_reading_it(nb):
    cell(nb, "a = 1")
    cell(nb, "b = a + 1")
    cell(nb, "a = 10", "--flow nb --name cell_a")
    cell(nb, "b = a + 1")
    assert nb.user_ns["b"] == 11


def test_a_loop_variable_left_by_another_cell_is_an_input_of_the_cell(nb):
    plain(nb, "for i in range(3):\n    pass\n")
    cell(nb, "y = 10 * i")
    plain(nb, "for i in range(5):\n    pass\n")
    cell(nb, "y = 10 * i")
    assert nb.user_ns["y"] == 40


def test_a_cell_defined_again_under_its_name_with_another_body_computes_the_new_body(nb):
    cell(nb, "q = 1", "--flow nb --name answer")
    cell(nb, "q = 2", "--flow nb --name answer")
    assert nb.user_ns["q"] == 2
    assert nb.user_ns["nb"].get("answer") == {"q": 2}


def test_a_cell_reading_ipythons_output_history_is_not_cached(nb):
    nb.run_cell("2 + 2", store_history=True)
    with pytest.warns(lf.CacheWarning, match=r"history \(Out\)"):
        cell(nb, "shown = sorted(Out.values())")
    nb.run_cell("3 + 3", store_history=True)
    with pytest.warns(lf.CacheWarning, match=r"history \(Out\)"):
        cell(nb, "shown = sorted(Out.values())")
    assert nb.user_ns["shown"] == [4, 6]
