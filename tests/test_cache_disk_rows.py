"""The disk tier's rows (disk layout 3): one row per computed node, its trace and latest
records restated by its entry's row; what deleting, replacing and older layouts do."""

from __future__ import annotations

import contextlib
import pathlib
import shutil
import sqlite3
import threading

import pytest

import lazyflow as lf
import lazyflow.cache.batch as batch
from lazyflow.cache.base import NO_VALUE
from lazyflow.cache.disk import DiskTier
from lazyflow.cache.disk_index import DiskIndex

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
ENTRY, TRACE, LATEST = "e" * 32, "7" * 32, "1" * 32
META = {"digest": "d" * 32, "node": "clean", "flow": "f", "params": {"n": "p" * 32},
        "input_digests": {}, "fingerprint": {"code:clean": "c" * 32}}
TRACE_RECORD = {"key": ENTRY, "digest": "d" * 32, "node": "clean"}
LATEST_RECORD = {"digest": "d" * 32, "key": ENTRY, "params": {"n": "p" * 32},
                 "input_digests": {}, "fingerprint": {"code:clean": "c" * 32}}
_STAMP = {"created", "stored", "lazyflow", "encoding"}


@pytest.fixture
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches wait an hour before their writer commits them: only a flush commits."""
    monkeypatch.setattr(batch, "DELAY", 3600.0)


def _rows(directory: pathlib.Path) -> list[tuple[str, str | None, str | None]]:
    """The committed rows of lazyflow's table, as another process sees them."""
    with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db:
        return db.execute("SELECT key, trace, latest FROM LazyflowEntries ORDER BY rowid"
                          ).fetchall()


def _computed_node(tier: DiskTier) -> None:
    """What the engine stores for a computed node: its value, trace and latest records."""
    tier.put(ENTRY, [1, 2], META)
    tier.put(TRACE, NO_VALUE, TRACE_RECORD)
    tier.put(LATEST, NO_VALUE, LATEST_RECORD)


def _chain(cache: lf.Cache, length: int) -> lf.Flow:
    flow = lf.Flow("rows", cache=cache)
    namespace: dict[str, object] = {}
    exec("def n0(x):\n    return x\n" + "".join(  # noqa: S102 - a chain of distinct functions
        f"def n{i}(n{i - 1}):\n    return n{i - 1} + 1\n" for i in range(1, length)), namespace)
    for i in range(length):
        flow.node(namespace[f"n{i}"])
    return flow


# --------------------------------------------------------------------------- one row per node


def test_a_first_run_writes_one_row_per_computed_node(tmp_path, unhurried):
    flow = _chain(lf.Cache(memory=None, disk=tmp_path), 20)
    flow.get("n19", x=1)
    rows = _rows(tmp_path)
    computed = [row for row in rows if row[2] is not None]  # each carries its latest record
    # and its trace record, but n0's: a node without upstream nodes has none
    assert len(computed) == 20 and sum(trace is not None for _, trace, _ in computed) == 19
    assert len(rows) == 21  # and the environment record


def test_a_new_process_resolves_a_chain_from_restated_records(tmp_path):
    _chain(lf.Cache(memory=None, disk=tmp_path), 20).get("n19", x=1)
    run = _chain(lf.Cache(memory=None, disk=tmp_path), 20).run("n19", x=1)
    assert (run["n19"], run.nodes["n19"].status, run.nodes["n19"].tier) == (20, "cached", "disk")
    assert [name for name, record in run.nodes.items() if record.status == "completed"] == []


def test_explain_reads_what_changed_from_a_restated_latest_record(tmp_path):
    _chain(lf.Cache(memory=None, disk=tmp_path), 3).get("n2", x=1)
    plan = _chain(lf.Cache(memory=None, disk=tmp_path), 3).explain("n2", x=2)
    assert "parameter changed (x)" in str(plan)


def test_a_restated_record_reads_back_as_the_record_stored_alone_would(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    buffered = tier.meta(TRACE), tier.meta(LATEST)
    tier.flush()
    assert _rows(tmp_path) == [(ENTRY, TRACE, LATEST)]
    fresh = DiskTier(tmp_path, size_limit=10**9)
    for meta, record in zip((fresh.meta(TRACE), fresh.meta(LATEST)),
                            (TRACE_RECORD, LATEST_RECORD), strict=True):
        assert set(meta) == set(record) | _STAMP
        assert {field: meta[field] for field in record} == record
        assert meta["encoding"] == 1
    assert (fresh.meta(TRACE), fresh.meta(LATEST)) == buffered
    assert fresh.get(TRACE) is NO_VALUE and fresh.check(TRACE) is None
    assert set(fresh.keys()) == {ENTRY, TRACE, LATEST}


def test_a_record_its_entry_does_not_restate_is_a_row_of_its_own(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(ENTRY, [1, 2], META)
    tier.put(TRACE, NO_VALUE, {**TRACE_RECORD, "expires": 12.5})
    tier.flush()
    assert _rows(tmp_path) == [(ENTRY, None, None), (TRACE, None, None)]
    assert DiskTier(tmp_path, size_limit=10**9).meta(TRACE)["expires"] == 12.5


def test_a_record_of_a_committed_entry_is_a_row_of_its_own(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.put(ENTRY, [1, 2], META)
    tier.flush()
    tier.put(TRACE, NO_VALUE, TRACE_RECORD)
    tier.flush()
    assert _rows(tmp_path) == [(ENTRY, None, None), (TRACE, None, None)]
    assert DiskTier(tmp_path, size_limit=10**9).meta(TRACE)["key"] == ENTRY


# --------------------------------------------------------------------------- delete, replace


def test_deleting_an_entry_keeps_the_records_it_restated(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    before = tier.meta(TRACE), tier.meta(LATEST)
    tier.delete(ENTRY)
    assert tier.meta(ENTRY) is None
    assert (tier.meta(TRACE), tier.meta(LATEST)) == before
    assert sorted(_rows(tmp_path)) == [(LATEST, None, None), (TRACE, None, None)]


def test_deleting_a_restated_record_keeps_its_entry(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    tier.delete(TRACE)
    assert tier.meta(TRACE) is None and tier.get(ENTRY) == [1, 2]
    assert tier.meta(LATEST)["key"] == ENTRY
    assert _rows(tmp_path) == [(ENTRY, None, LATEST)]


def test_replacing_a_buffered_entry_keeps_the_records_it_restated(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    tier.put(ENTRY, [3], {**META, "digest": "other"})
    tier.flush()
    fresh = DiskTier(tmp_path, size_limit=10**9)
    assert fresh.get(ENTRY) == [3]
    assert (fresh.meta(TRACE)["digest"], fresh.meta(LATEST)["digest"]) == ("d" * 32,) * 2


def test_replacing_a_committed_entry_keeps_the_records_it_restated(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    tier.flush()
    tier.put(ENTRY, [1, 2], META)  # another process computed the same node, say
    tier.flush()
    assert _rows(tmp_path) == [(ENTRY, TRACE, LATEST)]
    assert DiskTier(tmp_path, size_limit=10**9).meta(TRACE)["key"] == ENTRY


def test_a_record_written_again_alone_wins_over_the_restated_one(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    tier.flush()
    tier.put(TRACE, NO_VALUE, {**TRACE_RECORD, "key": "9" * 32})
    tier.flush()
    assert DiskTier(tmp_path, size_limit=10**9).meta(TRACE)["key"] == "9" * 32


def test_a_latest_record_names_the_entry_computed_last(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    _computed_node(tier)
    tier.flush()
    later = {**META, "digest": "n" * 32}
    tier.put("f" * 32, [9], later)
    tier.put(LATEST, NO_VALUE, {**LATEST_RECORD, "digest": "n" * 32, "key": "f" * 32})
    tier.flush()
    assert [row[2] for row in _rows(tmp_path)] == [LATEST, LATEST]
    assert DiskTier(tmp_path, size_limit=10**9).meta(LATEST)["key"] == "f" * 32


# --------------------------------------------------------------------------- older layouts


def test_a_layout_2_index_gains_the_columns_and_reads_its_rows(tmp_path):
    folder = pathlib.Path(shutil.copytree(FIXTURES / "cache-v2-disk2", tmp_path / "cache"))
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as db:
        before = db.execute("SELECT key, blob FROM LazyflowEntries ORDER BY key").fetchall()
    tier = DiskTier(folder, size_limit=10**9)
    assert all(tier.meta(key) is not None for key, _ in before)
    _computed_node(tier)
    tier.flush()
    with contextlib.closing(sqlite3.connect(folder / "cache.db")) as db:
        assert db.execute("SELECT key, blob FROM LazyflowEntries WHERE key != ? ORDER BY key",
                          (ENTRY,)).fetchall() == before
        assert db.execute("SELECT trace, latest FROM LazyflowEntries WHERE key = ?",
                          (ENTRY,)).fetchone() == (TRACE, LATEST)


# --------------------------------------------------------------------------- lookups together


def test_a_first_run_looks_up_new_nodes_records_together(tmp_path, monkeypatch):
    looked_up: list[str] = []
    row = DiskIndex.row
    monkeypatch.setattr(DiskIndex, "row", lambda self, key: (looked_up.append(key),
                                                              row(self, key))[1])
    flow = _chain(lf.Cache(memory=None, disk=tmp_path), 20)
    run = flow.run("n19", x=1)
    entries = {record.key for record in run.nodes.values()}
    # the target's trace record, then each node's entry: no trace or latest record alone
    assert len(looked_up) == 21 and set(looked_up[1:]) == entries


def test_a_new_process_says_what_changed_from_the_latest_records_it_looked_up_together(
        tmp_path):
    _chain(lf.Cache(memory=None, disk=tmp_path), 3).get("n2", x=1)
    run = _chain(lf.Cache(memory=None, disk=tmp_path), 3).run("n2", x=2)
    assert "parameter changed (x)" in run.nodes["n0"].reason
    assert run.nodes["n2"].status == "completed"


def test_a_cache_without_a_disk_tier_never_lists_the_keys_expected():
    def keys():
        raise AssertionError("listed")
        yield ""  # a generator

    lf.Cache(memory="1MB", disk=None, remote=None).expect(keys())


def test_a_key_expected_missing_and_written_since_is_found(tmp_path, unhurried):
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.expect([ENTRY, TRACE])
    _computed_node(tier)
    tier._batch.flush()  # committed, no longer buffered: read from the index
    assert tier.meta(ENTRY)["digest"] == "d" * 32 and tier.meta(TRACE)["key"] == ENTRY


def _expected_then_written_elsewhere(tmp_path: pathlib.Path) -> DiskTier:
    """A tier that looked ``ENTRY`` up ahead (``expect``) before another tier on its
    directory (another process) wrote it."""
    tier = DiskTier(tmp_path, size_limit=10**9)
    tier.expect([ENTRY])
    other = DiskTier(tmp_path, size_limit=10**9)
    other.put(ENTRY, [1, 2], META)
    other.flush()
    return tier


def test_a_key_another_process_writes_after_expect_is_missed_once_at_most(tmp_path):
    tier = _expected_then_written_elsewhere(tmp_path)
    assert tier.meta(ENTRY) is None  # as if looked up before the other wrote it
    assert tier.meta(ENTRY)["digest"] == "d" * 32


def test_flush_forgets_what_expect_found_missing(tmp_path):
    tier = _expected_then_written_elsewhere(tmp_path)
    tier.flush()
    assert tier.meta(ENTRY)["digest"] == "d" * 32


# --------------------------------------------------------------------------- concurrency


def test_threads_writing_nodes_while_batches_commit_read_every_record_back(tmp_path, monkeypatch):
    monkeypatch.setattr(batch, "DELAY", 0.0)  # every write finds its batch due: commits race
    tier = DiskTier(tmp_path, size_limit=10**9)

    def write(thread: int) -> None:
        for i in range(100):
            entry = f"{thread:02x}{i:030x}"
            meta = {**META, "digest": entry, "node": f"n{thread}-{i}"}
            tier.put(entry, i, meta)
            tier.put("7" + entry[1:], NO_VALUE, {"key": entry, "digest": entry,
                                                 "node": f"n{thread}-{i}"})
            tier.put("1" + entry[1:], NO_VALUE, {"digest": entry, "key": entry,
                                                 "params": META["params"], "input_digests": {},
                                                 "fingerprint": META["fingerprint"]})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tier.flush()
    fresh = DiskTier(tmp_path, size_limit=10**9)
    for thread in range(4):
        for i in range(100):
            entry = f"{thread:02x}{i:030x}"
            assert fresh.get(entry) == i
            for record in ("7" + entry[1:], "1" + entry[1:]):
                assert (fresh.meta(record)["key"], fresh.meta(record)["digest"]) == (entry, entry)
