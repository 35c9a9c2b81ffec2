"""The disk tier's write batches: read-your-writes, when a batch commits, what a crash leaves."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import lazyflow as lf
import lazyflow.cache.batch as batch
from lazyflow.cache.base import NO_VALUE
from lazyflow.cache.disk import DiskTier

ROOT = pathlib.Path(lf.__file__).resolve().parent.parent
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "cache-v2"
KEY = "a" * 32


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches wait an hour before their writer commits them on its own: whatever lands
    sooner was committed by a flush, a write past the delay, or ``commit()``."""
    monkeypatch.setattr(batch, "DELAY", 3600.0)


def _committed(directory: pathlib.Path) -> set[str]:
    """Keys another connection (another process) sees in the index."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db:
        return {key for (key,) in db.execute(
            "SELECT key FROM LazyflowEntries UNION SELECT key FROM Cache")}


def _landing(tier: DiskTier) -> threading.Event:
    """Set once a batch of ``tier`` has been committed."""
    landed = threading.Event()
    write = tier._batch.write

    def recorded(rows):
        write(rows)
        landed.set()

    tier._batch.write = recorded
    return landed


# --------------------------------------------------------------------------- read your writes


def test_a_buffered_entry_reads_back_before_its_batch_is_committed(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, [1, 2], {"digest": "d", "node": "n"})
    assert _committed(tmp_path) == set()
    assert tier.contains(KEY)
    assert tier.meta(KEY)["node"] == "n"
    assert tier.get(KEY) == [1, 2]
    assert tier.check(KEY)["digest"] == "d"


def test_a_buffered_record_reads_back_as_a_record(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, NO_VALUE, {"digest": "d"})
    assert tier.get(KEY) is NO_VALUE
    assert tier.meta(KEY)["digest"] == "d"


def test_other_openers_see_an_entry_once_its_batch_is_committed(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 42, {"digest": "d"})
    other = DiskTier(tmp_path, size_limit=10**9)
    assert other.meta(KEY) is None
    tier.flush()
    assert other.get(KEY) == 42


def test_a_later_write_of_a_buffered_key_replaces_it(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 1, {"digest": "one"})
    tier.put(KEY, 2, {"digest": "two"})
    tier.flush()
    assert DiskTier(tmp_path, size_limit=10**9).get(KEY) == 2


def test_a_large_value_replaces_a_buffered_small_one_of_the_same_key(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9, min_file_size=10_000)
    tier.put(KEY, np.arange(10), {"digest": "small"})
    tier.put(KEY, np.arange(10_000), {"digest": "large"})
    tier.flush()
    assert tier.meta(KEY)["digest"] == "large"
    np.testing.assert_array_equal(DiskTier(tmp_path, size_limit=10**9).get(KEY),
                                  np.arange(10_000))
    assert list(tier.keys()) == [KEY]


def test_deleting_a_buffered_entry_leaves_nothing_to_commit(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 1, {"digest": "d"})
    tier.delete(KEY)
    tier.flush()
    assert tier.meta(KEY) is None
    assert _committed(tmp_path) == set()


def test_clear_drops_buffered_entries(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 1, {"digest": "d"})
    tier.clear()
    tier.flush()
    assert tier.meta(KEY) is None
    assert _committed(tmp_path) == set()


# --------------------------------------------------------------------------- when batches commit


def test_a_batch_is_committed_in_one_transaction_by_flush(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    batches = []
    write = tier._batch.write
    tier._batch.write = lambda rows: (batches.append(sorted(rows)), write(rows))
    keys = [f"{i:032x}" for i in range(100)]
    for key in keys:
        tier.put(key, key, {"digest": key})
    tier.flush()
    assert batches == [keys]
    assert _committed(tmp_path) == set(keys)


def test_the_writer_commits_a_batch_after_its_delay_without_further_writes(tmp_path):
    tier = DiskTier(tmp_path, size_limit=10**9)
    landed = _landing(tier)
    tier.put(KEY, 1, {"digest": "d"})
    assert landed.wait(timeout=30)
    assert _committed(tmp_path) == {KEY}


def test_a_write_past_the_delay_commits_the_batch_in_the_writing_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "_GRACE", 3600.0)  # the writer thread would wait an hour
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 1, {"digest": "d"})
    tier._batch.opened -= tier._batch.delay  # the batch is due
    tier.put("b" * 32, 2, {"digest": "e"})
    assert _committed(tmp_path) == {KEY}  # the batch as it was: the new row opens the next
    assert tier._batch.get("b" * 32) is not None and tier.get("b" * 32) == 2


def test_records_written_right_after_their_entry_land_with_it_when_the_batch_fell_due(
        tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "_GRACE", 3600.0)  # the writer thread would wait an hour
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, 1, {"digest": "d"})
    tier._batch.opened -= tier._batch.delay  # the batch is due
    tier.put("b" * 32, 2, {"digest": "e", "node": "n"})
    tier.put("c" * 32, NO_VALUE, {"key": "b" * 32, "digest": "e", "node": "n"})
    tier.flush()
    with contextlib.closing(sqlite3.connect(tmp_path / "cache.db")) as db:
        assert db.execute("SELECT key, trace FROM LazyflowEntries ORDER BY rowid").fetchall() \
            == [(KEY, None), ("b" * 32, "c" * 32)]


def test_commit_has_the_writer_commit_at_once(tmp_path, unhurried):
    cache = lf.Cache(memory=None, disk=str(tmp_path), remote=None)
    landed = _landing(cache.tier("disk"))
    cache.store(KEY, 1, {"digest": "d"})
    cache.commit()
    assert landed.wait(timeout=30)
    assert _committed(tmp_path) == {KEY}


def test_the_engine_commits_finished_nodes_before_it_waits_on_a_running_one(tmp_path,
                                                                           unhurried):
    flow = lf.Flow("waits", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))
    landed = _landing(flow.cache.tier("disk"))

    @flow.node
    def first(n: int):
        return n + 1

    @flow.node
    def second(first):
        # runs on a worker thread while the engine waits for it: first's entry must land
        assert landed.wait(timeout=30), "first's entry was not committed while second ran"
        return first * 2

    run = flow.run("second", n=1, executor="threads")
    assert run["second"] == 4
    assert run.nodes["first"].key in _committed(tmp_path)


def test_every_entry_a_run_computed_is_committed_when_it_returns(tmp_path, unhurried):
    flow = lf.Flow("ends", cache=lf.Cache(disk=str(tmp_path), remote=None))

    @flow.node
    def first(n: int):
        return n + 1

    run = flow.run("first", n=1)
    assert run.nodes["first"].key in _committed(tmp_path)


def test_a_batch_that_cannot_be_written_is_reported_by_the_next_flush(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)

    def full_disk(rows):
        raise sqlite3.OperationalError("database or disk is full")

    tier._batch.write = full_disk
    tier.put(KEY, 1, {"digest": "d"})
    with pytest.warns(lf.CacheWarning, match="could not write 1 cache entries.*disk is full"):
        tier.flush()
    assert tier.meta(KEY) is None  # recomputed when needed, never half there


# --------------------------------------------------------------------------- the limit


def test_the_size_limit_evicts_the_oldest_small_entries_too(tmp_path):
    tier = DiskTier(tmp_path, size_limit=400_000)
    keys = [f"{i:032x}" for i in range(600)]
    for key in keys:
        tier.put(key, os.urandom(2_000), {"digest": key})
        tier.flush()  # a batch each, so that they are stored one after the other
    kept = set(tier.keys())
    assert keys[-1] in kept and keys[0] not in kept
    assert tier.nbytes <= 400_000


def test_small_entries_and_value_files_are_evicted_oldest_first_together(tmp_path):
    tier = DiskTier(tmp_path, size_limit=3_000_000)
    tier.put("0" * 32, np.zeros(100_000), {"digest": "old file"})  # 800 KB: a file
    tier.put("1" * 32, b"x" * 1000, {"digest": "small"})
    tier.flush()
    for i in range(2, 6):
        tier.put(f"{i}" * 32, np.full(100_000, i, dtype=np.float64), {"digest": str(i)})
    kept = set(tier.keys())
    assert "0" * 32 not in kept and "5" * 32 in kept


# --------------------------------------------------------------------------- the older layout


def test_a_write_moves_a_key_of_the_older_layout_into_the_new_table(tmp_path):
    folder = pathlib.Path(shutil.copytree(FIXTURE, tmp_path / "cache"))
    manifest = json.loads(FIXTURE.with_suffix(".json").read_text())
    key = manifest["nodes"]["total"]["key"]
    tier = DiskTier(folder, size_limit=10**9)
    tier.put(key, 7.0, {"digest": "rewritten"})
    tier.flush()
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as db:
        assert db.execute("SELECT count(*) FROM Cache WHERE key = ?", (key,)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM LazyflowEntries WHERE key = ?",
                          (key,)).fetchone() == (1,)
    assert DiskTier(folder, size_limit=10**9).get(key) == 7.0


# --------------------------------------------------------------------------- crashes

# A process that commits some entries, buffers more, starts committing them and is
# killed inside that transaction: it says so on stdout, then blocks on stdin.
WRITER = textwrap.dedent('''
    import contextlib, sys
    import numpy as np
    import lazyflow.cache.batch as batch
    import lazyflow.cache.disk as disk
    import lazyflow.cache.disk_index as disk_index
    from lazyflow.cache.base import NO_VALUE

    batch.DELAY = 3600.0  # only flush commits
    folder, committed, buffered = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tier = disk.DiskTier(folder, size_limit=10**9, min_file_size=10_000)

    def store(i):
        key = f"{i:032x}"
        if i % 3 == 2:
            tier.put(key, NO_VALUE, {"digest": f"record {i}"})
        elif i % 10 == 0:  # a value file, committed at once
            tier.put(key, np.full(5_000, i), {"digest": f"file {i}"})
        else:  # with its trace record, which the value's row restates
            tier.put(key, list(range(i)), {"digest": f"value {i}", "node": f"n{i}"})
            tier.put("t" + key[1:], NO_VALUE, {"key": key, "digest": f"value {i}",
                                                "node": f"n{i}"})

    for i in range(committed):
        store(i)
    tier.flush()
    for i in range(committed, committed + buffered):
        store(i)

    opened = disk_index._transaction

    @contextlib.contextmanager
    def stalled(con):
        with opened(con):
            yield  # the batch's rows are written, the COMMIT is not
            print("inside the transaction", flush=True)
            sys.stdin.read()  # until killed

    disk_index._transaction = stalled
    tier.flush()
''')

# A fresh process reading every key: what it finds, each value checked.
READER = textwrap.dedent('''
    import json, sqlite3, sys
    import numpy as np
    import lazyflow.cache.disk as disk
    from lazyflow.cache.base import NO_VALUE

    folder, count = sys.argv[1], int(sys.argv[2])
    tier = disk.DiskTier(folder, size_limit=10**9)
    found = {}
    for i in range(count):
        key = f"{i:032x}"
        meta = tier.meta(key)
        if meta is None:
            continue
        value = tier.get(key)  # raises if a value reads back wrong
        if value is NO_VALUE:
            found[key] = ["record", meta["digest"]]
        elif isinstance(value, np.ndarray):
            found[key] = ["file", meta["digest"], bool((value == i).all())]
        else:
            found[key] = ["value", meta["digest"], value == list(range(i))]
        trace = tier.meta("t" + key[1:])
        if trace is not None:
            found["t" + key[1:]] = ["trace", trace["key"], trace["digest"]]
    tier.put("f" * 32, 1, {"digest": "written after the crash"})  # the index is not locked
    tier.flush()
    with sqlite3.connect(tier.index_path) as db:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
    print(json.dumps({"found": found, "integrity": check}))
''')


def _expected(i: int) -> list:
    if i % 3 == 2:
        return ["record", f"record {i}"]
    if i % 10 == 0:
        return ["file", f"file {i}", True]
    return ["value", f"value {i}", True]


def _complete(i: int) -> dict[str, list]:
    """What reads back of the ``i``-th write once committed: its entry, and the trace
    record a value's row restates."""
    key = f"{i:032x}"
    found = {key: _expected(i)}
    if found[key][0] == "value":
        found["t" + key[1:]] = ["trace", key, f"value {i}"]
    return found


@pytest.mark.slow
def test_a_process_killed_mid_batch_leaves_only_complete_entries(tmp_path):
    folder, committed, buffered = tmp_path / "cache", 40, 40
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder), str(committed), str(buffered)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=environment)
    try:
        line = writer.stdout.readline()  # blocks until the child is inside its transaction
        assert line == "inside the transaction\n", writer.stderr.read()
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=60)
        writer.stdout.close()
        writer.stderr.close()
        writer.stdin.close()
    done = subprocess.run([sys.executable, "-c", READER, str(folder),
                           str(committed + buffered)],
                          env=environment, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    files = {f"{i:032x}": _expected(i) for i in range(committed, committed + buffered)
             if _expected(i)[0] == "file"}  # committed at once, before the batch
    assert report["found"] == {key: found for i in range(committed)
                               for key, found in _complete(i).items()} | files
    assert report["integrity"] == "ok"


# --------------------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_leaves_its_parents_buffered_rows_to_the_parent(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(KEY, "parent's", {"digest": "p"})
    batches = []
    write = tier._batch.write
    tier._batch.write = lambda rows: (batches.append(sorted(rows)), write(rows))
    pid = os.fork()
    if pid == 0:  # the child: its own write, through fresh locks and connections
        code = 1
        try:
            tier.put("c" * 32, "child's", {"digest": "c"})
            tier.flush()
            code = 0 if batches == [["c" * 32]] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tier.flush()
    assert batches == [[KEY]]
    assert tier.get("c" * 32) == "child's" and tier.get(KEY) == "parent's"
