"""Run history: what is recorded, where it lives, killed runs, concurrent writers."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from damage import GARBAGE, damage, fold_wal, set_aside

import lazyflow as lf
from lazyflow.history import FILENAME, Store, find, flush, location
from lazyflow.run import new_run_id

ROOT = Path(__file__).resolve().parents[1]


def _chain(flow: lf.Flow) -> None:
    @flow.node
    def raw(n: int):
        return list(range(n))

    @flow.node
    def total(raw):
        return sum(raw)


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return path


def _env(history_file: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LAZYFLOW_HISTORY": str(history_file)}


def test_each_run_is_recorded_with_a_row_per_node(flow):
    _chain(flow)
    first = flow.run("total", n=4)
    second = flow.run("total", n=4)
    runs = lf.history(flow, limit=2)
    assert [r.id for r in runs] == [second.id, first.id]
    assert runs[1].status == "completed"
    assert [(n.name, n.status) for n in runs[1].nodes] == [("raw", "completed"),
                                                           ("total", "completed")]
    assert [(n.name, n.status, n.tier) for n in runs[0].nodes] == [("total", "cached", "memory")]
    assert runs[1].node("total").key == first.nodes["total"].key
    assert runs[1].targets == ("total",)
    assert set(runs[1].inputs) == {"n"}


def test_a_failed_node_records_its_error_type_and_message(flow):
    @flow.node
    def broken():
        raise ValueError("bad data in row 3")

    with pytest.raises(ValueError):
        flow.run("broken")
    run = lf.history(flow, limit=1)[0]
    assert run.status == "failed"
    assert run.error_type == "ValueError"
    node = run.node("broken")
    assert (node.status, node.error_type, node.error_message) == ("failed", "ValueError",
                                                                  "bad data in row 3")


def test_the_environment_names_python_lazyflow_and_the_packages_the_code_uses(flow):
    import numpy as np

    @flow.node
    def arr(n: int):
        return np.arange(n)

    flow.run("arr", n=3)
    env = lf.history(flow, limit=1)[0].environment
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert env["lazyflow"] == lf.__version__
    assert env["packages"] == {"numpy": np.__version__}


def test_history_lives_beside_the_disk_tier(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    flow = lf.Flow("beside", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))
    _chain(flow)
    run = flow.run("total", n=3)
    assert location(flow.cache) == str(tmp_path / FILENAME)
    assert lf.history(flow)[0].id == run.id
    stored = sqlite3.connect(tmp_path / FILENAME).execute("SELECT id FROM runs").fetchall()
    assert stored == [(run.id,)]


def test_the_nodes_view_gives_one_sql_row_per_node(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    flow = lf.Flow("view", cache=lf.Cache(disk=None))
    _chain(flow)
    run = flow.run("total", n=3)
    lf.history(flow)  # flushes
    rows = sqlite3.connect(tmp_path / "h.sqlite").execute(
        "SELECT seq, name, status, key FROM nodes WHERE run_id = ? ORDER BY seq",
        (run.id,)).fetchall()
    assert rows == [(0, "raw", "completed", run.nodes["raw"].key),
                    (1, "total", "completed", run.nodes["total"].key)]


def test_a_flow_without_a_disk_tier_keeps_its_history_in_memory(flow, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    assert location(flow.cache) == ":memory:"


def test_lazyflow_history_names_a_file_or_turns_recording_off(flow, tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    assert location(flow.cache) == str(tmp_path / "h.sqlite")
    monkeypatch.setenv("LAZYFLOW_HISTORY", "off")
    assert location(flow.cache) is None


def test_history_filters_by_flow_name_and_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    a, b = lf.Flow("a", cache=lf.Cache(disk=None)), lf.Flow("b", cache=lf.Cache(disk=None))
    _chain(a)
    _chain(b)
    for n in range(3):
        a.run("total", n=n)
        b.run("total", n=n)
    assert [r.flow for r in lf.history("a", limit=None, path=str(tmp_path / "h.sqlite"))] \
        == ["a"] * 3
    assert len(lf.history(None, limit=4, path=str(tmp_path / "h.sqlite"))) == 4


def test_a_run_can_be_found_by_a_prefix_of_its_id(tmp_path, monkeypatch):
    # a history of its own: the process-wide in-memory one holds every run of the session,
    # and runs started in the same second share their id's leading characters
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    flow = lf.Flow("found", cache=lf.Cache(disk=None))
    _chain(flow)
    run = flow.run("total", n=2)
    assert find(run.id[:-3], path=location(flow.cache)).id == run.id


def test_a_prefix_two_runs_share_is_refused_as_ambiguous(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    flow = lf.Flow("twice", cache=lf.Cache(disk=None))
    _chain(flow)
    flow.run("total", n=2)
    flow.run("total", n=2)
    with pytest.raises(lf.UnknownRunError, match="is ambiguous"):
        find("20", path=location(flow.cache))


def test_run_ids_made_in_one_process_never_repeat():
    ids = [new_run_id() for _ in range(100_000)]  # a few seconds' worth of warm runs
    assert len(set(ids)) == len(ids)


def test_a_forked_child_makes_other_run_ids_than_its_parent():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, and leave without running pytest's exit
        os.write(write, new_run_id().encode())
        os._exit(0)
    os.close(write)
    assert os.waitpid(pid, 0)[1] == 0
    with os.fdopen(read) as f:
        child = f.read()
    assert child[-6:] != new_run_id()[-6:]


def test_an_unknown_run_id_says_where_it_looked(flow):
    with pytest.raises(lf.UnknownRunError, match="no recorded run has id 'nope'"):
        find("nope", path=location(flow.cache))


def test_to_frame_gives_one_row_per_run_with_status_counts(flow):
    _chain(flow)
    flow.run("total", n=5)
    flow.run("total", n=5)
    frame = lf.history(flow, limit=2).to_frame()
    assert list(frame["status"]) == ["completed", "completed"]
    assert list(frame["n_cached"]) == [1, 0]
    assert list(frame["n_completed"]) == [0, 2]


def test_a_run_killed_with_sigkill_is_recorded_as_interrupted(tmp_path):
    history_file = tmp_path / "h.sqlite"
    script = _script(tmp_path, """
        import sys
        import lazyflow as lf
        from lazyflow.history import flush

        flow = lf.Flow("killed", cache=lf.Cache(disk=None))

        @flow.node
        def first():
            return 1

        @flow.node
        def second(first):
            flush()                 # what the run recorded so far is committed
            print("ready", flush=True)
            sys.stdin.readline()    # never answered: the parent kills us here
            return 2

        flow.get("second")
    """)
    proc = subprocess.Popen([sys.executable, str(script)], env=_env(history_file),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    conn = sqlite3.connect(history_file)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    run = lf.history("killed", path=str(history_file))[0]
    assert run.status == "interrupted"
    assert run.ended is None
    assert [(n.name, n.status) for n in run.nodes] == [("first", "completed"),
                                                       ("second", "interrupted")]
    # the rewrite is stored, not just reported
    assert conn.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]


def test_a_run_of_a_live_process_is_not_called_interrupted(tmp_path):
    history_file = tmp_path / "h.sqlite"
    script = _script(tmp_path, """
        import sys
        import lazyflow as lf
        from lazyflow.history import flush

        flow = lf.Flow("alive", cache=lf.Cache(disk=None))

        @flow.node
        def slow():
            flush()
            print("ready", flush=True)
            sys.stdin.readline()
            return 1

        flow.get("slow")
    """)
    proc = subprocess.Popen([sys.executable, str(script)], env=_env(history_file),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert lf.history("alive", path=str(history_file))[0].status == "running"
        proc.stdin.write("go\n")
        proc.stdin.close()
    finally:
        proc.wait()
    assert proc.returncode == 0
    assert lf.history("alive", path=str(history_file))[0].status == "completed"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="Linux's /proc only")
def test_a_process_is_named_by_its_start_in_clock_ticks_as_text():
    from lazyflow.history.processes import process_start

    with open(f"/proc/{os.getpid()}/stat") as f:
        ticks = f.read().rpartition(")")[2].split()[19]
    assert process_start(os.getpid()) == ticks  # text, as runs recorded earlier hold it


def _race(script: Path, args: list[str], env: dict[str, str]) -> None:
    """Start one process per argument, release them together, and check each ends cleanly."""
    procs = [subprocess.Popen([sys.executable, str(script), arg], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for arg in args]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        assert "could not write run history" not in err


def test_processes_opening_new_history_files_at_once_all_set_them_up(tmp_path):
    script = _script(tmp_path, """
        import sys
        from lazyflow.history import open_store

        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(20):         # each file is new: its WAL switch and schema are contended
            open_store(f"{sys.argv[1]}/h{i}.sqlite").runs()
    """)
    _race(script, [str(tmp_path)] * 4, _env(tmp_path / "unused.sqlite"))
    for i in range(20):
        with sqlite3.connect(tmp_path / f"h{i}.sqlite") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_two_processes_recording_at_once_lose_no_run(tmp_path):
    history_file = tmp_path / "h.sqlite"
    script = _script(tmp_path, """
        import sys
        import lazyflow as lf
        from lazyflow.history import flush

        flow = lf.Flow(sys.argv[1], cache=lf.Cache(disk=None))

        @flow.node
        def square(x: int):
            return x * x

        print("ready", flush=True)
        sys.stdin.readline()        # both start writing together
        for x in range(40):
            flow.get("square", x=x)
            flush()                 # one commit per run: as much contention as possible
    """)
    _race(script, ["left", "right"], _env(history_file))
    runs = lf.history(None, limit=None, path=str(history_file))
    assert sorted((r.flow, r.status) for r in runs) == \
        [("left", "completed")] * 40 + [("right", "completed")] * 40
    assert all(len(r.nodes) == 1 for r in runs)
    assert sqlite3.connect(history_file).execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --------------------------------------------------------------------------- a damaged file

def _history_of_an_earlier_session(tmp_path: Path) -> Path:
    """``cache/history.sqlite`` as another process left it: one run, all in the main file."""
    cache = tmp_path / "cache"
    script = _script(tmp_path, f"""
        import lazyflow as lf

        flow = lf.Flow("earlier", cache=lf.Cache(memory=None, disk={str(cache)!r}, remote=None))

        @flow.node
        def answer():
            return 42

        flow.get("answer")
    """)
    env = {k: v for k, v in os.environ.items() if k != "LAZYFLOW_HISTORY"}
    subprocess.run([sys.executable, str(script)], env={**env, "PYTHONPATH": str(ROOT)},
                   check=True, timeout=120)
    fold_wal(cache / FILENAME)
    return cache / FILENAME


def test_a_damaged_history_is_set_aside_and_recording_goes_on(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    path = _history_of_an_earlier_session(tmp_path)
    damage(path)
    flow = lf.Flow("after", cache=lf.Cache(memory=None, disk=str(path.parent), remote=None))
    _chain(flow)
    with pytest.warns(lf.CacheWarning) as caught:
        run = flow.run("total", n=3)
        recorded = lf.history(flow)
    assert [r.id for r in recorded] == [run.id]
    (aside,) = set_aside(path)
    assert aside.read_bytes().startswith(GARBAGE)
    (message,) = [str(w.message) for w in caught if FILENAME in str(w.message)]
    assert str(path) in message and str(aside) in message and ".recover" in message


def test_the_fresh_history_opens_without_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    path = _history_of_an_earlier_session(tmp_path)
    damage(path)
    flow = lf.Flow("after", cache=lf.Cache(memory=None, disk=str(path.parent), remote=None))
    _chain(flow)
    with pytest.warns(lf.CacheWarning, match="damaged"):
        run = flow.run("total", n=3)
        lf.history(flow)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.id for r in Store(str(path)).runs()] == [run.id]


def test_a_history_with_malformed_pages_is_set_aside_when_first_read(tmp_path):
    path = _history_of_an_earlier_session(tmp_path)
    damage(path, at=4096)  # the header and schema page are intact: it opens, then fails
    store = Store(str(path))
    with pytest.warns(lf.CacheWarning, match="malformed"):
        assert store.runs() == []
    assert len(set_aside(path)) == 1


def test_a_node_that_joins_a_run_midway_gets_its_row(losing):
    flow, tier = losing
    _chain(flow)
    flow.get("total", n=4)
    tier.lose(flow.last_run.nodes["total"].key)
    # the writer takes the run's rows at its start: only "total" is in it then
    with pytest.warns(lf.CacheWarning):
        run = flow.run("total", n=4, observers=[_flush_when_started])
    # total's entry vanished when its value was read: raw joined the run to compute it
    assert list(run.nodes) == ["total", "raw"]
    assert [(n.name, n.status) for n in lf.history(flow, limit=1)[0].nodes] == [
        ("total", "completed"), ("raw", "cached")]


def _flush_when_started(event) -> None:
    if isinstance(event, lf.RunStarted):
        flush()


def test_a_history_that_cannot_be_written_warns_naming_the_runs_it_loses(tmp_path,
                                                                         monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # the history's folder would have to be inside a file
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(blocker / FILENAME))
    flow = lf.Flow("unwritable", cache=lf.Cache(disk=None))
    _chain(flow)
    run = flow.run("total", n=2)
    with pytest.warns(lf.LazyflowWarning,
                      match=f"could not write run history .*; not recorded: run {run.id} "
                            "of flow 'unwritable'"):
        flush()
