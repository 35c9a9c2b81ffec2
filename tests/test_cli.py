"""The `lazyflow` console script, run for real in subprocesses."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
from damage import GARBAGE, damage, fold_wal, set_aside

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = shutil.which("lazyflow", path=os.path.dirname(sys.executable))

FLOW_MODULE = """
import random

import lazyflow as lf

flow = lf.Flow("analysis")   # the default cache: memory, and disk in $LAZYFLOW_CACHE_DIR

@flow.node
def raw(n: int):
    return list(range(n))

@flow.node
def total(raw):
    return sum(raw)

@flow.node
def noisy(raw):
    return sum(raw) + random.random()

@flow.node
def broken(raw):
    raise ValueError("row 3 is malformed")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a flow module ``analysis.py``; the CLI runs there."""
    (tmp_path / "analysis.py").write_text(FLOW_MODULE)
    return tmp_path


def lazyflow(project: Path, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run the console script in ``project`` (stdout and stderr are pipes, not terminals)."""
    assert SCRIPT is not None, "the lazyflow console script is not installed in this venv"
    environment = {k: v for k, v in os.environ.items() if k != "LAZYFLOW_HISTORY"}
    environment.update(PYTHONPATH=str(ROOT), LAZYFLOW_CACHE_DIR=str(project / "cache"),
                       **(env or {}))
    return subprocess.run([SCRIPT, *args], cwd=project, env=environment, capture_output=True,
                          text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a usage error (exit code 2), checked to be just that."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("lazyflow: error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def json_of(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize("command", [
    [], ["run"], ["explain"], ["lineage"], ["verify"], ["runs"], ["show"], ["cache"],
    ["cache", "stats"], ["cache", "prune"], ["cache", "clear"], ["cache", "verify"],
    ["notebook"], ["notebook", "run"], ["graph"]])
def test_every_command_has_help(project, command):
    result = lazyflow(project, *command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lazyflow")


def test_the_top_level_help_lists_the_commands(project):
    out = lazyflow(project, "--help").stdout
    for command in ("run", "explain", "lineage", "verify", "runs", "show", "cache", "notebook"):
        assert f"    {command} " in out


# --------------------------------------------------------------------------- run


def test_run_prints_the_values_and_a_summary(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=10")
    assert result.returncode == 0, result.stderr
    assert "total = 45" in result.stdout
    assert "analysis: 2 completed" in result.stdout


def test_run_draws_a_progress_bar_on_stderr(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=10")
    assert "2/2" in result.stderr


def test_progress_on_a_stderr_that_is_no_terminal_is_one_plain_line_per_node(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=10")
    assert result.stderr.splitlines() == ["[1/2] raw completed", "[2/2] total completed"]


def test_a_second_run_in_a_new_process_is_served_from_the_cache(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=10")
    report = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=10", "--json"))
    assert report["status"] == "completed"
    assert report["counts"] == {"cached": 1}
    assert report["values"] == {"total": "45"}


def test_a_flow_can_be_named_by_file_path(project):
    result = lazyflow(project, "run", "./analysis.py:flow", "raw", "-p", "n=3", "--json")
    assert json_of(result)["values"] == {"raw": "[0, 1, 2]"}


def test_a_failing_node_exits_1_and_names_the_error(project):
    result = lazyflow(project, "run", "analysis:flow", "broken", "-p", "n=3")
    assert result.returncode == 1
    assert "ValueError: row 3 is malformed" in result.stderr
    assert "failed" in result.stdout


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize("args, message", [
    (["run", "nosuchmodule:flow", "total"], "no module named 'nosuchmodule'"),
    (["run", "missing/file.py:flow", "total"], "no such file 'missing/file.py'"),
    (["run", "analysis:flw", "total"], "analysis has no flow named 'flw'; flows there: flow"),
    (["run", "analysis:flow", "totl", "-p", "n=1"], "has no node 'totl'; did you mean 'total'"),
    (["run", "analysis:flow", "total", "-p", "n"], "malformed parameter 'n'"),
    (["run", "analysis:flow", "total", "-p", "1x=3"], "malformed parameter '1x=3'"),
    (["run", "analysis:flow", "total"], "node 'raw' needs input 'n'"),
    (["run", "analysis:flow", "total", "-p", "nn=3"],
     "'nn' is not an input of flow 'analysis': no node takes a parameter 'nn'; "
     "did you mean -p n=...?"),
    (["explain", "analysis:flow", "total", "-p", "nn=3"], "did you mean -p n=...?"),
    (["run", "analysis:flow", "total", "-p", "n=3", "-p", "raw=[1]"],
     "'raw' names a node of flow 'analysis', not an input"),
    (["run", "analysis:flow", "total", "-p", "n=ten"],
     "bad value for -p n: 'ten' is not an int (parameter 'n' of node 'raw')"),
    (["explain", "analysis:flow", "nope"], "has no node 'nope'"),
    (["show", "20000101-000000-abcdef"], "no recorded run has id"),
])
def test_usage_errors_exit_2_with_one_clear_line(project, args, message):
    result = lazyflow(project, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("lazyflow: error: ")


@pytest.mark.parametrize("args, message", [
    (["run", "analysis:flow", "total", "--bogus"], "unrecognized arguments: --bogus "
                                                    "(see lazyflow --help)"),
    (["cache"], "the following arguments are required: ACTION (see lazyflow cache --help)"),
    (["runs", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
])
def test_argument_errors_are_one_line_too(project, args, message):
    assert message in one_line_error(lazyflow(project, *args))


@pytest.mark.parametrize("source, message", [
    ("x = (\n", "cannot import broken.py: '(' was never closed"),
    ("import lazyflow as lf\nx = 1 / 0\n", "importing broken.py failed: ZeroDivisionError: "
                                          "division by zero"),
    ("import no_such_package_here\n", "importing broken.py failed: ModuleNotFoundError"),
])
def test_a_flow_module_that_does_not_import_is_one_line_naming_file_and_line(project, source,
                                                                              message):
    (project / "broken.py").write_text(source)
    error = one_line_error(lazyflow(project, "run", "broken.py:flow", "total"))
    assert message in error
    assert f"{project / 'broken.py'}, line " in error


def test_a_cache_dir_that_is_a_file_is_one_line(project):
    (project / "not-a-dir").write_text("")
    error = one_line_error(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=1",
                                    "--cache-dir", "not-a-dir"))
    assert "--cache-dir 'not-a-dir' is a file, not a directory" in error


def test_the_missing_input_hint_is_spelled_for_the_command_line(project):
    result = lazyflow(project, "run", "analysis:flow", "total")
    assert result.stderr == ("lazyflow: error: node 'raw' needs input 'n': pass -p n=... "
                             "or give the parameter a default\n")


def test_an_unknown_p_name_exits_2_before_anything_runs(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=3", "-p", "nn=3")
    assert result.returncode == 2
    assert json_of(lazyflow(project, "runs", "--cache-dir", "cache", "--json")) == []


def test_unknown_p_names_are_reported_before_values_are_converted(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=ten", "-p", "nn=3")
    assert result.returncode == 2
    assert "'nn' is not an input" in result.stderr


def test_an_unknown_key_in_lazyflow_toml_exits_2_naming_it_and_its_close_match(project):
    (project / "lazyflow.toml").write_text('memroy = "2GB"\n')
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=3")
    assert result.returncode == 2
    assert result.stderr.startswith("lazyflow: error: ")
    assert "unknown key 'memroy' (did you mean 'memory'?)" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- -p conversion

TYPED_MODULE = """
import enum
from pathlib import Path
from typing import Literal

import lazyflow as lf

class Mode(enum.Enum):
    FAST = 1
    SLOW = 2

flow = lf.Flow("typed", cache=None)

@flow.node
def settings(verbose: bool = True, mode: Mode = Mode.FAST,
             speed: Literal["low", "high"] = "low", label: str = "x",
             limit: int | None = 10, where: Path = Path("."), quiet=True):
    return {"verbose": verbose, "mode": mode.name, "speed": speed, "label": label,
            "limit": limit, "where": type(where).__name__, "quiet": quiet}
"""


def settings_of(project: Path, *params: str) -> dict:
    """The value of ``typed:flow``'s ``settings`` node, run with these ``-p`` options."""
    (project / "typed.py").write_text(TYPED_MODULE)
    args = [arg for param in params for arg in ("-p", param)]
    report = json_of(lazyflow(project, "run", "typed:flow", "settings", *args, "--json"))
    return ast.literal_eval(report["values"]["settings"])


def test_a_bool_parameter_given_false_on_the_command_line_is_false(project):
    assert settings_of(project, "verbose=false")["verbose"] is False


def test_an_unannotated_parameter_with_a_bool_default_reads_no_as_false(project):
    assert settings_of(project, "quiet=no")["quiet"] is False


def test_an_enum_parameter_is_given_by_its_member_name(project):
    assert settings_of(project, "mode=SLOW")["mode"] == "SLOW"


def test_a_str_parameter_keeps_digits_as_text(project):
    assert settings_of(project, "label=10")["label"] == "10"


def test_an_optional_parameter_takes_none_and_numbers(project):
    assert settings_of(project, "limit=None")["limit"] is None
    assert settings_of(project, "limit=5")["limit"] == 5


def test_a_path_parameter_gets_a_path(project):
    assert settings_of(project, "where=data")["where"] in ("PosixPath", "WindowsPath")


def test_a_value_outside_a_literal_exits_2_naming_the_parameter_value_and_values(project):
    (project / "typed.py").write_text(TYPED_MODULE)
    result = lazyflow(project, "run", "typed:flow", "settings", "-p", "speed=medium")
    assert result.returncode == 2
    assert result.stderr == ("lazyflow: error: bad value for -p speed: 'medium' is not one of "
                             "'low', 'high' (parameter 'speed' of node 'settings')\n")


# --------------------------------------------------------------------------- explain, lineage, verify


def test_explain_says_what_would_run_and_why(project):
    lazyflow(project, "run", "analysis:flow", "raw", "-p", "n=4")
    report = json_of(lazyflow(project, "explain", "analysis:flow", "total", "-p", "n=4",
                              "--json"))
    assert [(r["node"], r["action"], r["tier"]) for r in report["nodes"]] == \
        [("raw", "hit", "disk"), ("total", "run", None)]


def test_lineage_reads_the_tree_from_the_cache_of_an_earlier_process(project):
    run = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--json"))
    tree = json_of(lazyflow(project, "lineage", "analysis:flow", "total", "-p", "n=4",
                            "--json"))
    keys = {n["node"]: n["key"] for n in run["nodes"]}
    assert tree["key"] == keys["total"]
    assert tree["inputs"]["raw"]["key"] == keys["raw"]
    assert tree["tier"] == "disk"
    text = lazyflow(project, "lineage", "analysis:flow", "total", "-p", "n=4").stdout
    assert "└─ raw [" in text and "(n=4)" in text


def test_lineage_of_a_value_never_computed_exits_1(project):
    result = lazyflow(project, "lineage", "analysis:flow", "total", "-p", "n=4")
    assert result.returncode == 1
    assert "NotCachedError" in result.stderr


def test_verify_exits_1_and_names_the_nondeterministic_node(project):
    lazyflow(project, "run", "analysis:flow", "noisy", "-p", "n=4")
    result = lazyflow(project, "verify", "analysis:flow", "noisy", "-p", "n=4")
    assert result.returncode == 1
    assert "first divergence at 'noisy'" in result.stdout


def test_verify_exits_0_when_the_value_reproduces(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4")
    report = json_of(lazyflow(project, "verify", "analysis:flow", "total", "-p", "n=4",
                              "--json"))
    assert report["ok"] is True
    assert [c["status"] for c in report["checks"]] == ["same", "same"]


def test_verify_takes_an_executor_and_records_no_run_in_the_history(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4")
    report = json_of(lazyflow(project, "verify", "analysis:flow", "total", "-p", "n=4",
                              "--executor", "threads", "--json"))
    assert report["ok"] is True and report["recomputed"] == ["raw", "total"]
    runs = json_of(lazyflow(project, "runs", "--cache-dir", "cache", "--json"))
    assert [r["targets"] for r in runs] == [["total"]]


# --------------------------------------------------------------------------- history


def test_runs_and_show_read_the_history_beside_the_cache(project):
    first = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=5", "--json"))
    second = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=5", "--json"))
    runs = json_of(lazyflow(project, "runs", "--cache-dir", "cache", "--json"))
    assert [r["id"] for r in runs] == [second["id"], first["id"]]
    table = lazyflow(project, "runs", "--flow", "analysis", "--limit", "1", "--cache-dir", "cache")
    assert second["id"] in table.stdout and first["id"] not in table.stdout
    shown = lazyflow(project, "show", first["id"][:-2], "--cache-dir", "cache")
    assert shown.returncode == 0, shown.stderr
    assert f"run {first['id']}" in shown.stdout
    assert "raw    completed" in shown.stdout


METERED_MODULE = """
import lazyflow as lf

flow = lf.Flow("metered")

@flow.node(profile_memory=True)
def fit(n: int, api_key: str = "none"):
    lf.report(tokens=812, cost=0.013)
    return list(range(n))

@flow.node
def report(fit):
    return len(fit)
"""


@pytest.fixture
def metered(project: Path) -> Path:
    """The project with a module ``metered.py`` whose node reports metrics."""
    (project / "metered.py").write_text(METERED_MODULE)
    return project


def test_show_prints_the_inputs_values_not_their_digests(metered):
    run = json_of(lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3", "--json"))
    shown = lazyflow(metered, "show", run["id"], "--cache-dir", "cache")
    assert shown.returncode == 0, shown.stderr
    assert "inputs n=3, api_key=<redacted>" in shown.stdout


def test_show_never_prints_a_token_passed_with_p(metered):
    secret = "sk-unique-7f3a9c"
    run = json_of(lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3",
                           "-p", f"api_key={secret}", "--json"))
    shown = lazyflow(metered, "show", run["id"], "--cache-dir", "cache", "--json")
    assert json_of(shown)["input_values"]["api_key"] == "<redacted>"
    assert secret not in shown.stdout


def test_show_prints_each_nodes_cpu_peak_memory_and_metrics(metered):
    run = json_of(lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3", "--json"))
    shown = lazyflow(metered, "show", run["id"], "--cache-dir", "cache").stdout
    header = next(line for line in shown.splitlines() if line.startswith("node "))
    assert header.split()[:7] == ["node", "status", "tier", "time", "cpu", "peak", "metrics"]
    fit = next(line for line in shown.splitlines() if line.startswith("fit "))
    assert "tokens=812 cost=0.013" in fit
    assert re.search(r"\s\d+(\.\d+)? (B|KB|MB)\s", fit), fit  # its peak memory
    assert "reported: 812 tokens, 0.013 cost" in shown


def test_show_says_what_a_warm_runs_hits_saved(metered):
    lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3")
    warm = json_of(lazyflow(metered, "run", "metered:flow", "report", "fit", "-p", "n=3",
                            "--json"))
    shown = lazyflow(metered, "show", warm["id"], "--cache-dir", "cache").stdout
    assert "saved tokens=812 cost=0.013" in shown
    assert "saved: 812 tokens, 0.013 cost" in shown


def test_runs_lists_each_runs_input_values(metered):
    lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3")
    table = lazyflow(metered, "runs", "--cache-dir", "cache").stdout
    assert "n=3, api_key=<redacted>" in table


def test_lineage_prints_input_values_and_redacts_secret_names(metered):
    lazyflow(metered, "run", "metered:flow", "report", "-p", "n=3", "-p", "api_key=sk-7f3a")
    tree = lazyflow(metered, "lineage", "metered:flow", "report", "-p", "n=3",
                    "-p", "api_key=sk-7f3a")
    assert tree.returncode == 0, tree.stderr
    assert "(n=3, api_key=<redacted>)" in tree.stdout and "sk-7f3a" not in tree.stdout


def test_runs_records_a_failed_run_with_its_error(project):
    lazyflow(project, "run", "analysis:flow", "broken", "-p", "n=2")
    run = json_of(lazyflow(project, "runs", "--cache-dir", "cache", "--json"))[0]
    assert run["status"] == "failed"
    broken = next(n for n in run["nodes"] if n["name"] == "broken")
    assert (broken["error_type"], broken["error_message"]) == ("ValueError",
                                                               "row 3 is malformed")


def test_runs_sets_a_damaged_history_aside_and_lists_the_runs_recorded_after(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=5")
    history = project / "cache" / "history.sqlite"
    fold_wal(history)
    damage(history)
    result = lazyflow(project, "runs", "--cache-dir", "cache")
    assert result.returncode == 0, result.stderr
    (aside,) = set_aside(history)
    assert aside.read_bytes().startswith(GARBAGE)
    assert result.stderr.count("CacheWarning") == 1
    assert str(history) in result.stderr and str(aside) in result.stderr
    after = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6", "--json"))
    again = lazyflow(project, "runs", "--cache-dir", "cache", "--json")
    assert again.stderr == ""
    assert [r["id"] for r in json_of(again)] == [after["id"]]


# --------------------------------------------------------------------------- cache


def test_cache_stats_counts_the_disk_entries(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4")
    stats = json_of(lazyflow(project, "cache", "stats", "--cache-dir", "cache", "--json"))
    assert stats["disk"]["entries"] >= 2
    assert stats["disk"]["bytes"] > 0


def test_cache_stats_prints_the_remotes_figures_per_flow_as_an_aligned_table(project):
    remote = f"file://{project / 'shared'}"
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--remote", remote)
    out = lazyflow(project, "cache", "stats", "--cache-dir", "cache", "--remote", remote).stdout
    assert "{" not in out  # no raw dict
    lines = out.splitlines()
    at = lines.index("remote by flow:")
    header, row = lines[at + 1], lines[at + 2]
    assert header.split() == ["flow", "entries", "bytes"]
    assert row.split()[0] == "analysis" and int(row.split()[1]) >= 2
    # columns line up: each figure ends where its heading ends
    assert row.index(row.split()[1]) + len(row.split()[1]) == header.index("entries") + 7
    assert len(row) == len(header)


COLLEAGUE_FLOW = """
import lazyflow as lf
from shapes import Circle   # the colleague's own module, beside this file

flow = lf.Flow("geometry")

@flow.node
def circle(radius: int):
    return Circle(radius)
"""


def test_cache_verify_keeps_an_entry_whose_class_it_cannot_import(project):
    colleague = project / "colleague"
    colleague.mkdir()
    (colleague / "shapes.py").write_text("class Circle:\n"
                                         "    def __init__(self, radius):\n"
                                         "        self.radius = radius\n")
    (colleague / "geometry.py").write_text(COLLEAGUE_FLOW)
    first = json_of(lazyflow(project, "run", "colleague/geometry.py:flow", "circle",
                             "-p", "radius=2", "--json"))
    result = lazyflow(project, "cache", "verify", "--drop", "--cache-dir", "cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("disk     checked 1: 1 intact, 0 damaged")
    again = json_of(lazyflow(project, "run", "colleague/geometry.py:flow", "circle",
                             "-p", "radius=2", "--json"))
    assert again["counts"] == {"cached": 1}  # the colleague's entry is still there
    assert again["nodes"][0]["key"] == first["nodes"][0]["key"]


def _flip_value_file(project: Path) -> None:
    """Flip one byte in the middle of the disk tier's only value file."""
    (path,) = (project / "cache").rglob("*.val")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _raw_with_a_flipped_value_file(project: Path) -> str:
    """Run ``total`` with a ``raw`` large enough for a value file, damage it; ``raw``'s key."""
    run = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=50000", "--json"))
    _flip_value_file(project)
    return next(n["key"] for n in run["nodes"] if n["node"] == "raw")


def test_cache_verify_reports_flipped_bytes_exits_1_and_keeps_the_entry(project):
    bad = _raw_with_a_flipped_value_file(project)
    result = lazyflow(project, "cache", "verify", "--cache-dir", "cache")
    assert result.returncode == 1
    assert "1 damaged (kept: rerun with --drop to delete them)" in result.stdout
    assert f"damaged    {bad}  node 'raw': entry checksum" in result.stdout
    report = json.loads(lazyflow(project, "cache", "verify", "--cache-dir", "cache",
                                 "--json").stdout)
    assert [d["key"] for d in report["disk"]["damaged"]] == [bad]  # still there to report
    assert report["disk"]["dropped"] == []


def test_cache_verify_drop_deletes_the_damaged_entry(project):
    bad = _raw_with_a_flipped_value_file(project)
    result = lazyflow(project, "cache", "verify", "--drop", "--cache-dir", "cache", "--json")
    assert result.returncode == 1  # damage was found, even though it is gone now
    assert json.loads(result.stdout)["disk"]["dropped"] == [bad]
    assert lazyflow(project, "cache", "verify", "--cache-dir", "cache").returncode == 0
    rerun = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=50000",
                             "--json"))
    assert rerun["counts"] == {"cached": 1}  # total's entry was intact and kept


def test_cache_clear_empties_the_disk_tier_and_keeps_the_history(project):
    first = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--json"))
    assert lazyflow(project, "cache", "clear", "--tier", "disk", "--cache-dir", "cache"
                    ).returncode == 0
    stats = json_of(lazyflow(project, "cache", "stats", "--cache-dir", "cache", "--json"))
    assert stats["disk"]["entries"] == 0
    assert json_of(lazyflow(project, "runs", "--cache-dir", "cache", "--json"))[0]["id"] \
        == first["id"]
    rerun = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--json"))
    assert rerun["counts"] == {"completed": 2}


def test_cache_prune_by_age_removes_old_entries(project):
    lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4")
    assert lazyflow(project, "cache", "prune", "--older-than", "0s", "--cache-dir", "cache"
                    ).returncode == 0
    rerun = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--json"))
    assert rerun["counts"] == {"completed": 2}


def _remote_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def team(project: Path) -> str:
    """A ``file://`` remote (a shared folder) holding the entries of one run, also on disk."""
    url = f"file://{project / 'team'}"
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--remote", url)
    assert result.returncode == 0, result.stderr
    assert _remote_files(project / "team")
    return url


def _disk_entries(project: Path) -> int:
    return json_of(lazyflow(project, "cache", "stats", "--cache-dir", "cache", "--json")
                   )["disk"]["entries"]


def test_cache_clear_of_a_remote_without_yes_exits_2_naming_it_and_deletes_nothing(project,
                                                                                   team):
    on_disk, on_remote = _disk_entries(project), _remote_files(project / "team")
    error = one_line_error(lazyflow(project, "cache", "clear", "--remote", team,
                                    "--cache-dir", "cache"))
    assert f"lazyflow cache clear would delete entries of the remote cache {team}" in error
    assert "Pass --yes to delete them, or --tier disk" in error
    assert _remote_files(project / "team") == on_remote
    assert _disk_entries(project) == on_disk > 0  # all or nothing: the local tier is kept too


def test_cache_clear_yes_empties_the_remote_and_names_it(project, team):
    result = lazyflow(project, "cache", "clear", "--remote", team, "--cache-dir", "cache",
                      "--yes")
    assert result.returncode == 0, result.stderr
    assert f"remote ({team})" in result.stdout
    assert _remote_files(project / "team") == []


def test_a_remote_set_in_lazyflow_toml_needs_yes_too(project, team):
    (project / "lazyflow.toml").write_text(f'remote = "{team}"\n')
    error = one_line_error(lazyflow(project, "cache", "clear", "--cache-dir", "cache"))
    assert team in error
    assert _remote_files(project / "team")


def test_a_remote_set_in_the_environment_needs_yes_too(project, team):
    result = lazyflow(project, "cache", "clear", "--cache-dir", "cache",
                      env={"LAZYFLOW_REMOTE": team})
    assert team in one_line_error(result)
    assert _remote_files(project / "team")


def test_cache_clear_of_the_disk_tier_needs_no_yes_with_a_remote_configured(project, team):
    result = lazyflow(project, "cache", "clear", "--tier", "disk", "--remote", team,
                      "--cache-dir", "cache")
    assert result.returncode == 0, result.stderr
    assert _disk_entries(project) == 0
    assert _remote_files(project / "team")


def test_cache_prune_of_a_remote_needs_yes(project, team):
    on_remote = _remote_files(project / "team")
    error = one_line_error(lazyflow(project, "cache", "prune", "--older-than", "0s",
                                    "--remote", team, "--cache-dir", "cache"))
    assert f"lazyflow cache prune would delete entries of the remote cache {team}" in error
    assert _remote_files(project / "team") == on_remote
    result = lazyflow(project, "cache", "prune", "--older-than", "0s", "--remote", team,
                      "--cache-dir", "cache", "--yes")
    assert result.returncode == 0, result.stderr
    assert _remote_files(project / "team") == []


@pytest.mark.s3
def test_cache_clear_of_an_s3_remote_needs_yes(project, s3_url, s3_options):
    import s3fs

    env = {"LAZYFLOW_REMOTE_OPTIONS": json.dumps(s3_options)}
    ran = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=4", "--remote", s3_url,
                   env=env)
    assert ran.returncode == 0, ran.stderr
    bucket = s3fs.S3FileSystem(**s3_options)
    stored = bucket.find(s3_url)
    assert stored
    error = one_line_error(lazyflow(project, "cache", "clear", "--remote", s3_url, env=env))
    assert s3_url in error
    bucket.invalidate_cache()
    assert bucket.find(s3_url) == stored
    assert lazyflow(project, "cache", "clear", "--remote", s3_url, "--yes", env=env
                    ).returncode == 0
    bucket.invalidate_cache()
    assert bucket.find(s3_url) == []


@pytest.mark.parametrize("args, message", [
    (["cache", "prune"], "needs --max-size and/or --older-than"),
    (["cache", "prune", "--older-than", "soon"], "malformed age 'soon'"),
    (["cache", "prune", "--max-size", "big"], "--max-size 'big' is not a size"),
    (["cache", "clear", "--tier", "tape"], "no 'tape' tier"),
    (["cache", "prune", "--older-than", "1d", "--tier", "tape"], "no 'tape' tier"),
    (["cache", "verify", "--tier", "tape"], "no 'tape' tier"),
])
def test_malformed_cache_commands_exit_2(project, args, message):
    result = lazyflow(project, *args)
    assert result.returncode == 2
    assert message in result.stderr


# --------------------------------------------------------------------------- notebook


PLAIN_CELLS = [
    textwrap.dedent("""\
        import lazyflow as lf
        flow = lf.Flow("nb")"""),
    textwrap.dedent("""\
        @flow.node
        def raw(n: int):
            return list(range(n))

        @flow.node
        def total(raw):
            return sum(raw)"""),
    "flow.get('total', n=100)",
    "print('first five:', flow.get('raw', n=5))",
]

# every cell body and node appends its name to ran.log: the count of executions, on disk
MAGIC_CELLS = [
    "%load_ext lazyflow\nimport lazyflow as lf",
    textwrap.dedent("""\
        %%flow
        with open("ran.log", "a") as log:
            log.write("raw\\n")
        raw = list(range(10))"""),
    textwrap.dedent("""\
        %%flow
        with open("ran.log", "a") as log:
            log.write("total\\n")
        total = sum(raw)
        print("total is", total)"""),
    textwrap.dedent("""\
        @lf.node
        def doubled(total):
            with open("ran.log", "a") as log:
                log.write("doubled\\n")
            return 2 * total"""),
    "lf.default_flow().get('doubled')",
]


def _notebook(project: Path, cells: list[str] = PLAIN_CELLS) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = project / "analysis.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_a_notebook_rerun_in_a_fresh_kernel_is_all_cache_hits_with_identical_outputs(project):
    nb = _notebook(project)
    first = json_of(lazyflow(project, "notebook", "run", nb.name, "--output", nb.name,
                             "--json"))
    assert (first["computed"], first["cached"]) == (3, 0)
    again = lazyflow(project, "notebook", "run", nb.name, "--check", "--json")
    report = json_of(again)
    assert report["hit_rate"] == 1.0
    assert (report["computed"], report["cached"]) == (0, 2)
    assert report["changed"] == []
    assert [[(n["node"], n["status"], n["tier"]) for n in c["nodes"]]
            for c in report["cells"]] == [[], [], [("total", "cached", "disk")],
                                          [("raw", "cached", "disk")]]
    text = lazyflow(project, "notebook", "run", nb.name, "--check").stdout
    assert "(100% cache hits)" in text and "outputs identical to the stored ones" in text


@pytest.mark.slow
def test_a_notebook_of_flow_cells_reruns_in_a_fresh_kernel_without_running_any_cell(project):
    nb = _notebook(project, MAGIC_CELLS)
    first = json_of(lazyflow(project, "notebook", "run", nb.name, "--output", nb.name,
                             "--json"))
    assert first["cached"] < first["computed"]
    assert (project / "ran.log").read_text().split() == ["raw", "total", "doubled"]
    report = json_of(lazyflow(project, "notebook", "run", nb.name, "--check", "--json"))
    assert (project / "ran.log").read_text().split() == ["raw", "total", "doubled"]
    assert report["hit_rate"] == 1.0
    assert (report["computed"], report["cached"]) == (0, 3)
    assert [[(n["node"], n["status"], n["tier"]) for n in c["nodes"]]
            for c in report["cells"]] == [[], [("cell_raw", "cached", "disk")],
                                          [("cell_total", "cached", "disk")], [],
                                          [("doubled", "cached", "disk")]]
    assert all(n["saved"] > 0 for c in report["cells"] for n in c["nodes"])
    assert report["changed"] == [] and report["ok"] is True


@pytest.mark.slow
def test_notebook_check_exits_1_when_an_output_differs_from_the_stored_one(project):
    nb = _notebook(project)
    lazyflow(project, "notebook", "run", nb.name, "--output", nb.name)
    stored = nbformat.read(nb, as_version=4)
    stored.cells[2].outputs[0]["data"]["text/plain"] = "4951"
    nbformat.write(stored, nb)
    result = lazyflow(project, "notebook", "run", nb.name, "--check")
    assert result.returncode == 1
    assert "outputs differ in cells 2" in result.stdout


@pytest.mark.slow
def test_a_failing_notebook_cell_stops_the_run_and_exits_1(project):
    nb = _notebook(project)
    broken = nbformat.read(nb, as_version=4)
    broken.cells[3].source = "1 / 0"
    nbformat.write(broken, nb)
    result = lazyflow(project, "notebook", "run", nb.name)
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stdout


@pytest.mark.slow
def test_a_failing_notebooks_report_carries_no_colour_codes_when_piped(project):
    nb = _notebook(project)
    broken = nbformat.read(nb, as_version=4)
    broken.cells[3].source = "1 / 0"
    nbformat.write(broken, nb)
    result = lazyflow(project, "notebook", "run", nb.name)
    assert "stopped: ZeroDivisionError: division by zero" in result.stdout
    assert "\x1b" not in result.stdout + result.stderr
    assert "\\u001b" not in lazyflow(project, "notebook", "run", nb.name, "--json").stdout


@pytest.mark.parametrize("text, message", [
    ("this is not json", "Notebook does not appear to be JSON"),
    ('{"nbformat": 4, "nbformat_minor": 5, "metadata": {}}', "missing an expected key: cells"),
    ("[]", "is not a valid notebook"),
])
def test_a_file_that_is_no_notebook_is_one_line_not_a_schema_traceback(project, text, message):
    (project / "bad.ipynb").write_text(text)
    error = one_line_error(lazyflow(project, "notebook", "run", "bad.ipynb"))
    assert error.startswith("lazyflow: error: bad.ipynb is not a valid notebook: ")
    assert message in error


def test_an_output_into_a_missing_directory_is_refused_before_the_kernel_starts(project):
    nb = _notebook(project)
    error = one_line_error(lazyflow(project, "notebook", "run", nb.name, "--output",
                                    "nowhere/out.ipynb"))
    assert "--output 'nowhere/out.ipynb': no such directory 'nowhere'" in error


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_run_with_another_executor_is_recorded_as_such(project, executor):
    run = json_of(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6",
                           "--executor", executor, "--json"))
    assert run["values"] == {"total": "15"}
    assert run["counts"] == {"completed": 2}
    shown = json_of(lazyflow(project, "show", run["id"], "--cache-dir", "cache", "--json"))
    assert shown["executor"] == executor


def test_an_unknown_executor_exits_2(project):
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6", "--executor", "nope")
    assert result.returncode == 2
    assert "unknown executor 'nope'" in result.stderr


# --------------------------------------------------------------------------- a Dask scheduler


def test_executor_dask_without_a_scheduler_says_how_to_name_one(project):
    error = one_line_error(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6",
                                    "--executor", "dask"))
    assert "--executor dask needs a scheduler: pass --scheduler tcp://HOST:8786 or set " \
           "LAZYFLOW_DASK_SCHEDULER" in error


def test_a_scheduler_with_another_executor_is_a_usage_error(project):
    error = one_line_error(lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6",
                                    "--executor", "threads", "--scheduler", "tcp://h:8786"))
    assert "--scheduler is for --executor dask, not --executor threads" in error


def test_a_scheduler_that_does_not_answer_is_one_line_naming_it(project):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    result = lazyflow(project, "run", "analysis:flow", "total", "-p", "n=6",
                      "--scheduler", address,
                      env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    error = one_line_error(result)
    assert f"--executor dask could not reach the Dask scheduler at '{address}'" in error


DASK_MODULE = """
import lazyflow as lf

flow = lf.Flow("remote_work", cache=None)

@flow.node
def where(n: int):
    import distributed

    return distributed.get_worker().address  # raises outside a Dask worker
"""


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["flag", "environment"])
def test_run_reaches_a_dask_scheduler_by_flag_or_environment(project, monkeypatch, how):
    distributed = pytest.importorskip("distributed")
    (project / "on_dask.py").write_text(DASK_MODULE)
    monkeypatch.syspath_prepend(str(project))  # the in-process workers import the module
    with distributed.LocalCluster(n_workers=1, processes=False, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        args, env = (["--scheduler", address], None) if how == "flag" else \
            (["--executor", "dask"], {"LAZYFLOW_DASK_SCHEDULER": address})
        run = json_of(lazyflow(project, "run", "on_dask:flow", "where", "-p", "n=1", *args,
                               "--json", env=env))
        workers = {worker.address for worker in cluster.workers.values()}
    assert ast.literal_eval(run["values"]["where"]) in workers


# --------------------------------------------------------------------------- graph


def _nodes_and_inputs(svg: str) -> tuple[list[str], list[str]]:
    return (re.findall(r'class="lf-node" data-node="([^"]+)"', svg),
            re.findall(r'class="lf-input" data-input="input:([^"]+)"', svg))


def test_graph_prints_the_flows_dag_as_svg_with_its_inputs(project):
    result = lazyflow(project, "graph", "analysis.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    assert _nodes_and_inputs(result.stdout) == (["raw", "total", "noisy", "broken"], ["n"])


def test_graph_out_writes_what_flow_to_svg_gives(project):
    result = lazyflow(project, "graph", "analysis.py", "--out", "dag.svg")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wrote dag.svg: flow 'analysis', 4 nodes, 1 input\n"
    expected = subprocess.run(
        [sys.executable, "-c", "import analysis, sys; sys.stdout.write(analysis.flow.to_svg())"],
        cwd=project, env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{project}"},
        capture_output=True, text=True, check=True).stdout
    assert (project / "dag.svg").read_text() == expected


def test_graph_flow_picks_one_of_several_flows(project):
    (project / "two.py").write_text(FLOW_MODULE + textwrap.dedent('''
        other = lf.Flow("other")

        @other.node
        def alone(k: int = 1):
            return k
    '''))
    result = lazyflow(project, "graph", "two.py", "--flow", "other")
    assert result.returncode == 0, result.stderr
    assert _nodes_and_inputs(result.stdout) == (["alone"], ["k"])


@pytest.mark.parametrize(("args", "message"), [
    (["missing.py"], "no such file 'missing.py'"),
    (["broken.py"], "cannot import broken.py: invalid syntax"),
    (["raising.py"], "importing raising.py failed: RuntimeError: no data here"),
    (["analysis.py", "--flow", "nope"], "analysis.py has no flow named 'nope'"),
    (["analysis.py", "--out", "no/such/dir/dag.svg"], "cannot write 'no/such/dir/dag.svg'"),
])
def test_graph_of_a_bad_file_is_a_one_line_error_with_exit_code_2(project, args, message):
    (project / "broken.py").write_text("def (:\n")
    (project / "raising.py").write_text("raise RuntimeError('no data here')\n")
    result = lazyflow(project, "graph", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"lazyflow: error: {message}")
    assert result.stderr.count("\n") == 1 and result.stdout == ""
