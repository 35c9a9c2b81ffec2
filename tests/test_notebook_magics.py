"""``%%flow`` cells and the ``%flow`` line magic, in a real IPython shell.

Executions are counted through a side effect on disk: each cell appends its
name to a log file, so a restored cell leaves no trace there. The log's path
is a hidden name of the shell (as IPython's own machinery is), so it is not
an input of the cells that write to it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from IPython.core.displaypub import DisplayPublisher

import lazyflow as lf
import lazyflow.api


@pytest.fixture
def nb(shell, tmp_path):
    """The shell with a flow ``nb`` (memory cache) and a log path ``log`` in its namespace."""
    shell.user_ns["nb"] = lf.Flow("nb", cache=lf.Cache(disk=None))
    _log_to(shell, tmp_path / "log")
    return shell


def _log_to(shell, path: Path) -> None:
    """Give cells a log path ``log`` that is not one of their inputs (nor warned about as one)."""
    shell.push({"log": str(path)}, interactive=False)


def cell(shell, source: str, options: str = "--flow nb") -> None:
    """Run ``source`` as a ``%%flow`` cell; fail the test on any error."""
    shell.run_cell(f"%%flow {options}\n{source}").raise_error()


def executions(shell) -> list[str]:
    path = Path(shell.user_ns["log"])
    return path.read_text().split() if path.exists() else []


COUNT = "with open(log, 'a') as f: f.write('{name}\\n')\n"
A = COUNT.format(name="a") + "a = 10 * base\n"
B = COUNT.format(name="b") + "b = a + 1\n"
C = COUNT.format(name="c") + "c = 'unrelated'\n"


def test_a_cell_runs_once_and_its_rerun_is_restored_without_executing(nb):
    nb.user_ns["base"] = 2
    cell(nb, A)
    assert nb.user_ns["a"] == 20
    del nb.user_ns["a"]
    cell(nb, A)
    assert nb.user_ns["a"] == 20
    assert executions(nb) == ["a"]


def test_a_hit_prints_one_line_naming_the_tier_and_the_time_saved(nb, capsys):
    nb.user_ns["base"] = 2
    cell(nb, A)
    capsys.readouterr()
    cell(nb, A)
    out = capsys.readouterr().out
    assert re.fullmatch(r"lazyflow: a restored from the memory cache "
                        r"\(cell_a; saved [\d.]+(µs|ms|s) of compute\)\n", out)


def test_stdout_of_the_first_run_is_replayed_on_a_hit(nb, capsys):
    source = COUNT.format(name="p") + "p = 1\nprint('loaded', p, 'rows')\n"
    cell(nb, source)
    assert capsys.readouterr().out == "loaded 1 rows\n"
    cell(nb, source)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == ["loaded 1 rows"] and lines[0].startswith("lazyflow: p restored")
    assert executions(nb) == ["p"]


class _PrintingPublisher(DisplayPublisher):
    """A display publisher that prints what it is given, so tests see displays among text."""

    def publish(self, data, metadata=None, *args, **kwargs):
        print(f"[display {data.get('text/html', data.get('text/plain'))}]")


def test_displays_and_text_are_replayed_in_their_order_on_a_hit(nb, capsys):
    nb.display_pub = _PrintingPublisher(shell=nb)
    source = (COUNT.format(name="t") + "from IPython.display import HTML, display\n"
              "t = 3\nprint('before')\ndisplay(HTML('<b>table</b>'))\nprint('after')\n")
    cell(nb, source)
    assert capsys.readouterr().out == "before\n[display <b>table</b>]\nafter\n"
    cell(nb, source)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("lazyflow: t restored")
    assert lines[1:] == ["before", "[display <b>table</b>]", "after"]
    assert executions(nb) == ["t"]


def test_changing_an_upstream_value_reruns_only_the_cells_that_read_it(nb):
    nb.user_ns["base"] = 2
    for source in (A, B, C):
        cell(nb, source)
    nb.user_ns["base"] = 3
    for source in (A, B, C):
        cell(nb, source)
    assert executions(nb) == ["a", "b", "c", "a", "b"]
    assert nb.user_ns["b"] == 31


def test_an_upstream_cell_returning_an_equal_value_leaves_its_readers_cached(nb):
    nb.user_ns["base"] = 2
    cell(nb, A)
    cell(nb, B)
    # new code for cell a, same value of a
    cell(nb, COUNT.format(name="a") + "a = 20 * base // 2\n", "--flow nb --name cell_a")
    cell(nb, B)
    assert executions(nb) == ["a", "b", "a"]


def test_comments_and_blank_lines_do_not_change_a_cells_key(nb):
    nb.user_ns["base"] = 2
    cell(nb, A)
    cell(nb, "# the same cell, reformatted\n\n" + A.replace("=", " = ") + "\n\n")
    assert executions(nb) == ["a"]


def test_editing_a_cells_code_reruns_it(nb):
    nb.user_ns["base"] = 2
    cell(nb, A)
    cell(nb, A.replace("10 *", "100 *"), "--flow nb --name cell_a")
    assert nb.user_ns["a"] == 200
    assert executions(nb) == ["a", "a"]


def test_editing_a_helper_function_the_cell_calls_reruns_it(nb):
    nb.run_cell("def scale(x):\n    return 10 * x\n").raise_error()
    source = COUNT.format(name="s") + "s = scale(3)\n"
    cell(nb, source)
    cell(nb, source)
    nb.run_cell("def scale(x):\n    return 100 * x\n").raise_error()
    cell(nb, source)
    assert nb.user_ns["s"] == 300
    assert executions(nb) == ["s", "s"]


def test_node_functions_consume_cell_outputs_by_name_and_cells_consume_nodes(nb):
    nb.user_ns["base"] = 2
    cell(nb, A)
    nb.run_cell("@nb.node\ndef tripled(a):\n    return 3 * a\n").raise_error()
    cell(nb, COUNT.format(name="t") + "t = tripled + 1\n")
    assert nb.user_ns["t"] == 61
    flow = nb.user_ns["nb"]
    assert ("a", "tripled") in flow.edges() and ("tripled", "cell_t") in flow.edges()
    assert flow.get("tripled") == 60
    assert executions(nb) == ["a", "t"]


def test_imports_inside_a_restored_cell_are_available_afterwards(nb):
    source = "import statistics as st\nm = st.mean([1, 2, 3])\n"
    cell(nb, source)
    nb.run_cell("del st").raise_error()
    cell(nb, source)
    assert nb.user_ns["st"].mean([4]) == 4


def test_a_cell_that_rebinds_a_name_it_reads_is_keyed_by_the_value_it_read(nb):
    nb.user_ns["x"] = 1
    source = COUNT.format(name="x") + "x = x + 1\n"
    cell(nb, source)
    assert nb.user_ns["x"] == 2
    cell(nb, source)  # reads x == 2 now: a different input
    assert nb.user_ns["x"] == 3
    nb.user_ns["x"] = 1
    cell(nb, source)
    assert nb.user_ns["x"] == 2
    assert executions(nb) == ["x", "x"]


def test_out_limits_the_outputs_to_the_names_given(nb):
    cell(nb, "tmp = [1, 2]\nkept = sum(tmp)\n", "--flow nb --out kept --name summing")
    flow = nb.user_ns["nb"]
    assert "kept" in flow and "tmp" not in flow and "summing" in flow


def test_no_cache_runs_the_cell_every_time(nb):
    for _ in range(2):
        cell(nb, COUNT.format(name="n") + "n = 1\n", "--flow nb --no-cache")
    assert executions(nb) == ["n", "n"]


def test_an_unknown_option_is_a_usage_error(nb, capsys):
    result = nb.run_cell("%%flow --flow nb --bogus\nx = 1\n")
    assert result.error_in_exec is not None and "--bogus" in str(result.error_in_exec)


def test_flow_must_name_a_flow(nb):
    result = nb.run_cell("%%flow --flow log\nx = 1\n")
    assert "is not a lazyflow Flow" in str(result.error_in_exec)


def test_an_error_in_a_cell_propagates_and_caches_nothing(nb):
    result = nb.run_cell("%%flow --flow nb\n" + COUNT.format(name="e") + "e = 1 / 0\n")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    nb.run_cell("%%flow --flow nb\n" + COUNT.format(name="e") + "e = 1 / 0\n")
    assert executions(nb) == ["e", "e"]


def test_cells_without_flow_option_join_the_default_flow(shell, tmp_path, monkeypatch):
    monkeypatch.setattr(lazyflow.api, "_DEFAULT_FLOW", lf.Flow("default", cache=None))
    _log_to(shell, tmp_path / "log")
    cell(shell, A.replace("base", "2"), "")
    cell(shell, A.replace("base", "2"), "")
    assert "cell_a" in lf.default_flow() and executions(shell) == ["a"]


def test_line_magic_get_computes_a_node_with_inputs(nb):
    nb.run_cell("@nb.node\ndef power(k: int = 2, e: int = 2):\n    return k ** e\n")
    nb.user_ns["three"] = 3
    assert nb.run_cell("%flow get power k=three e=3 --flow nb").result == 27


def test_line_magic_explain_says_what_would_run(nb, capsys):
    nb.user_ns["base"] = 2
    cell(nb, A)
    capsys.readouterr()
    nb.run_cell("%flow explain cell_a --flow nb").raise_error()
    out = capsys.readouterr().out
    assert re.search(r"cell_a\s+hit\s+memory", out)


def test_line_magic_cache_clear_forgets_every_cell(nb, capsys):
    nb.user_ns["base"] = 2
    cell(nb, A)
    nb.run_cell("%flow cache clear --flow nb").raise_error()
    cell(nb, A)
    assert executions(nb) == ["a", "a"]


@pytest.fixture
def team(nb, tmp_path):
    """A flow ``team`` whose cache has a ``file://`` remote (a shared folder), with cell A in it."""
    remote = tmp_path / "team"
    nb.user_ns["team"] = lf.Flow("team", cache=lf.Cache(disk=None, remote=f"file://{remote}"))
    nb.user_ns["base"] = 2
    cell(nb, A, "--flow team")
    nb.user_ns["team"].cache.flush()  # the run's manifest, written in the background, lands
    assert any(p.is_file() for p in remote.rglob("*"))
    return remote


def test_line_magic_cache_clear_of_a_remote_needs_yes_and_deletes_nothing_without(nb, team):
    stored = sorted(team.rglob("*"))
    result = nb.run_cell("%flow cache clear --flow team")
    assert str(result.error_in_exec) == (
        f"%flow cache clear would delete entries of the remote cache file://{team}, which "
        "everyone using it shares; nothing was deleted. Pass --yes to delete them, or --tier "
        "memory to touch only this machine's cache")  # this flow has no disk tier
    assert sorted(team.rglob("*")) == stored
    cell(nb, A, "--flow team")  # still a hit: the memory tier was not cleared either
    assert executions(nb) == ["a"]


def test_line_magic_cache_clear_yes_clears_the_remote_too(nb, team, capsys):
    nb.run_cell("%flow cache clear --yes --flow team").raise_error()
    assert "cleared every cache tier of flow 'team'" in capsys.readouterr().out
    assert not any(p.is_file() for p in team.rglob("*"))
    cell(nb, A, "--flow team")
    assert executions(nb) == ["a", "a"]


def test_line_magic_cache_clear_of_the_memory_tier_needs_no_yes(nb, team):
    nb.run_cell("%flow cache clear --tier memory --flow team").raise_error()
    cell(nb, A, "--flow team")  # restored from the remote
    assert executions(nb) == ["a"]


def test_line_magic_cache_stats_prints_a_row_per_tier(nb, capsys):
    nb.user_ns["base"] = 2
    cell(nb, A)
    nb.run_cell("%flow cache stats --flow nb").raise_error()
    out = capsys.readouterr().out
    assert re.search(r"^memory\s+\d", out, re.M) and "misses" in out


def test_line_magic_show_displays_the_widget(nb):
    shown: list[object] = []
    nb.display_pub.publish = lambda data, **kw: shown.append(data)
    nb.run_cell("%flow show --flow nb").raise_error()
    assert any("application/vnd.jupyter.widget-view+json" in d for d in shown)


def test_a_bad_line_magic_prints_its_usage(nb):
    result = nb.run_cell("%flow dance")
    assert "usage: %flow show" in str(result.error_in_exec)


def test_an_output_that_cannot_be_hashed_names_the_cell_and_the_way_out(nb):
    result = nb.run_cell("%%flow --flow nb\nnumbers = (i for i in range(3))\n")
    error = result.error_in_exec
    assert isinstance(error, lf.HashingError) and "cell_numbers" in str(error)
    assert "--out" in "".join(error.__notes__)
    with pytest.warns(lf.LazyflowWarning, match="cannot be hashed"):
        cell(nb, "numbers = (i for i in range(3))\n", "--flow nb --no-cache")
    assert list(nb.user_ns["numbers"]) == [0, 1, 2]


def test_a_cells_warning_points_at_the_cell_not_at_lazyflow(nb):
    with pytest.warns(lf.CacheWarning, match="cell 'cell_x' calls eval") as warned:
        nb.run_cell("%%flow --flow nb\nx = eval('1')\n", store_history=True).raise_error()
    assert nb.compile.format_code_name(warned[0].filename) is not None


def test_a_cell_reading_names_through_eval_runs_uncached_with_a_warning(nb):
    nb.user_ns["x"] = 1
    source = COUNT.format(name="v") + "v = eval('x + 1')\n"
    for _ in range(2):
        with pytest.warns(lf.CacheWarning, match="eval"):
            cell(nb, source)
    assert nb.user_ns["v"] == 2 and executions(nb) == ["v", "v"]


def test_line_magic_watch_reruns_the_target_when_a_watched_file_changes(nb, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("1 2 3")
    nb.user_ns["data_path"] = str(data)
    nb.run_cell("import lazyflow as lf\n@nb.node\ndef total(data: lf.File):\n"
                "    return sum(int(x) for x in data.read_text().split())\n").raise_error()
    flow = nb.user_ns["nb"]
    totals: list[int] = []

    def edit_after_first_run(event):
        # the edit lands while the watch is live, right when its first run finishes
        if isinstance(event, lf.RunFinished):
            totals.append(event.run["total"])
            if len(totals) == 1:
                data.write_text("10 20 30")  # another size too: no mtime tie

    flow.events.subscribe(edit_after_first_run)
    result = nb.run_cell("%flow watch total data=lf.File(data_path) max_runs=2 --flow nb")
    result.raise_error()
    assert totals == [6, 60]
    assert result.result["total"] == 60


def test_line_magic_watch_without_a_target_prints_its_usage(nb):
    result = nb.run_cell("%flow watch --flow nb")
    assert "watch NAME [k=v ...]" in str(result.error_in_exec)


# --------------------------------------------------------------------------- IPython syntax

def test_a_cell_timed_with_percent_time_is_cached_and_restored_on_a_rerun(nb, capsys):
    nb.user_ns["base"] = 2
    source = COUNT.format(name="t") + "%time t = 10 * base\n"
    cell(nb, source)
    assert "Wall time" in capsys.readouterr().out
    del nb.user_ns["t"]
    cell(nb, source)
    assert nb.user_ns["t"] == 20 and executions(nb) == ["t"]
    assert "restored from the memory cache" in capsys.readouterr().out


def test_the_statement_under_percent_time_is_read_for_inputs(nb):
    nb.user_ns["base"] = 2
    source = COUNT.format(name="t") + "%time t = 10 * base\n"
    cell(nb, source)
    nb.user_ns["base"] = 3
    cell(nb, source)
    assert nb.user_ns["t"] == 30 and executions(nb) == ["t", "t"]


def test_a_percent_percent_time_cell_binds_its_outputs_in_the_cell_not_behind_its_back(nb):
    nb.user_ns["base"] = 2
    nb.user_ns["z"] = "stale"
    source = "%%time\n" + COUNT.format(name="z") + "z = base + 1\n"
    cell(nb, source)
    assert nb.user_ns["z"] == 3
    cell(nb, source)
    assert nb.user_ns["z"] == 3 and executions(nb) == ["z"]


def test_percent_timeit_reads_its_statement_but_binds_no_output(nb):
    nb.user_ns["base"] = 2
    cell(nb, COUNT.format(name="k") + "%timeit -n1 -r1 scratch = base * 2\nkept = 1\n")
    flow = nb.user_ns["nb"]
    assert "kept" in flow and "scratch" not in flow
    nb.user_ns["base"] = 5
    cell(nb, COUNT.format(name="k") + "%timeit -n1 -r1 scratch = base * 2\nkept = 1\n")
    assert executions(nb) == ["k", "k"]


def test_a_shell_command_cell_warns_once_and_runs_every_time(nb):
    source = COUNT.format(name="s") + "!echo hi\n"
    for _ in range(2):
        with pytest.warns(lf.CacheWarning) as caught:
            cell(nb, source)
        assert len(caught) == 1
        assert re.search(r"cell 'cell_\w+' runs a shell command \(!echo hi\): its result depends "
                         r"on the outside world, so it is not cached", str(caught[0].message))
    assert executions(nb) == ["s", "s"]


def test_the_output_of_a_shell_command_is_assigned_as_ipython_does(nb):
    with pytest.warns(lf.CacheWarning, match=r"'cell_x' runs a shell command \(!echo hi\)"):
        cell(nb, "x = !echo hi\n")
    with pytest.warns(lf.CacheWarning, match=r"'cell_y' runs a shell command \(%sx echo yo\)"):
        cell(nb, "y = %sx echo yo\n")
    assert list(nb.user_ns["x"]) == ["hi"] and list(nb.user_ns["y"]) == ["yo"]


def test_a_shell_command_under_percent_time_still_makes_the_cell_uncached(nb):
    for _ in range(2):
        with pytest.warns(lf.CacheWarning, match=r"runs a shell command \(!echo hi\)"):
            cell(nb, COUNT.format(name="ts") + "%time !echo hi\n")
    assert executions(nb) == ["ts", "ts"]


def test_a_bash_cell_magic_runs_uncached_with_a_warning(nb, tmp_path):
    out = tmp_path / "bash.out"
    source = f"%%bash\necho ran >> {out}\n"
    for _ in range(2):
        with pytest.warns(lf.CacheWarning, match=r"runs a shell command \(%%bash\)"):
            cell(nb, source)
    assert out.read_text() == "ran\nran\n"


def test_a_magic_lazyflow_cannot_see_into_runs_uncached_naming_it(nb):
    nb.user_ns["base"] = 2
    with pytest.warns(lf.CacheWarning, match=r"uses %who_ls, which lazyflow cannot see into, "
                                             r"so it is not cached; move that to an ordinary cell"):
        cell(nb, "names = %who_ls\n")
    assert "base" in nb.user_ns["names"]


def test_several_constructs_give_one_warning_naming_them_all(nb):
    with pytest.warns(lf.CacheWarning) as caught:
        cell(nb, "!echo a\nb = !echo b\n%who_ls\n")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "(!echo a) and runs a shell command (!echo b)" in message and "%who_ls" in message


def test_top_level_await_in_a_cell_is_a_clear_usage_error(nb):
    result = nb.run_cell("%%flow --flow nb\nimport asyncio\nx = await asyncio.sleep(0)\n")
    assert "await (or async for/with) outside a function" in str(result.error_in_exec)
    assert "without %%flow" in str(result.error_in_exec)


def test_a_cell_reading_a_file_through_a_path_variable_is_warned_about(nb, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    nb.user_ns["data_path"] = str(data)
    with pytest.warns(lf.CacheWarning, match=r"node 'cell_text' input 'data_path' names an "
                                             r"existing file .*pass lf\.File\("):
        cell(nb, "with open(data_path) as fh:\n    text = fh.read()\n")
    assert nb.user_ns["text"] == "1,2\n"
