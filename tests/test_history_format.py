"""What the run history stores and reads back: every node's fields exactly, warm runs as one
small row sharing its node set, histories written by earlier versions."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

import lazyflow as lf
from lazyflow.cache.memory import MemoryTier
from lazyflow.engine.events import GLOBAL
from lazyflow.history import FILENAME, NodeEntry, RunEntry, flush, location
from lazyflow.history.recorder import process_recorder
from lazyflow.history.rows import (
    RUN_COLUMNS,
    expand,
    finished_row,
    node_set,
    node_times,
    plain_parts,
    plain_row,
    repeat_row,
    repeated,
    repeated_owns,
    shape_of,
)
from lazyflow.history.store import SCHEMA_VERSION
from lazyflow.run import NodeRecord, Run

FIXTURES = Path(__file__).parent / "fixtures"


def _chain(flow: lf.Flow) -> None:
    @flow.node
    def raw(n: int):
        return list(range(n))

    @flow.node
    def total(raw, scale: int = 1):
        return sum(raw) * scale


def _recorded(record: NodeRecord) -> tuple[object, ...]:
    """A record's fields as the history keeps them."""
    error = record.error
    return (record.name, record.status, record.tier, record.key, record.digest,
            record.duration, record.size, record.saved, record.started, record.ended,
            record.reason, None if error is None else type(error).__name__,
            None if error is None else str(error))


def _read(entry: NodeEntry) -> tuple[object, ...]:
    """A node entry's fields, in the same order."""
    return (entry.name, entry.status, entry.tier, entry.key, entry.digest, entry.duration,
            entry.size, entry.saved, entry.started, entry.ended, entry.reason,
            entry.error_type, entry.error_message)


def _stored(path: Path, run_id: str) -> tuple[str, bytes | None, bytes | None]:
    """(nodes, node set, node times) as the history file holds them for the run."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT nodes, node_set, node_times FROM runs WHERE id = ?",
                            (run_id,)).fetchone()


@pytest.fixture
def beside_disk(tmp_path, monkeypatch) -> lf.Flow:
    """The default layout: memory and disk tiers, the history file beside the disk tier."""
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    flow = lf.Flow("layout", cache=lf.Cache(memory="100MB", disk=str(tmp_path), remote=None))
    _chain(flow)
    return flow


# --------------------------------------------------------------------------- warm runs


def test_a_fully_cached_run_reads_back_each_nodes_key_tier_digest_size_and_saved(beside_disk):
    beside_disk.run(["raw", "total"], n=4)
    warm = beside_disk.run(["raw", "total"], n=4)
    assert warm.counts() == {"cached": 2}
    (entry,) = lf.history(beside_disk, limit=1)
    assert entry.id == warm.id
    for node, record in zip(entry.nodes, warm.nodes.values(), strict=True):
        assert (node.key, node.tier, node.digest, node.size, node.saved) == \
            (record.key, "memory", record.digest, record.size, record.saved)
        assert record.size and record.saved  # real figures, not defaults
    assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in warm.nodes.values()]


def test_a_run_served_from_the_disk_tier_reads_back_each_node_exactly(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    flow = lf.Flow("from-disk", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))
    _chain(flow)
    flow.run(["raw", "total"], n=4)
    warm = flow.run(["raw", "total"], n=4)
    (entry,) = lf.history(flow, limit=1)
    assert [n.tier for n in entry.nodes] == ["disk", "disk"]
    assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in warm.nodes.values()]


def test_warm_runs_alike_are_one_row_each_sharing_one_node_set(beside_disk, tmp_path):
    beside_disk.run(["raw", "total"], n=4)
    warm = [beside_disk.run(["raw", "total"], n=4) for _ in range(3)]
    flush()
    stored = [_stored(tmp_path / FILENAME, run.id) for run in warm]
    assert [nodes for nodes, _, _ in stored] == ["[]"] * 3
    assert len({node_set for _, node_set, _ in stored} - {None}) == 1
    assert [len(times) for _, _, times in stored] == [16] * 3  # 8 bytes a node
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        assert conn.execute("SELECT count(*) FROM node_sets").fetchone() == (1,)


def test_a_history_holds_only_the_node_sets_its_runs_name(tmp_path, monkeypatch):
    monkeypatch.delenv("LAZYFLOW_HISTORY", raising=False)
    for place in ("before", "after"):  # the same request, its hits computed again elsewhere
        flow = lf.Flow("again", cache=lf.Cache(memory="100MB", disk=str(tmp_path / place),
                                               remote=None))
        _chain(flow)
        flow.run(["raw", "total"], n=4)
        warm = [flow.run(["raw", "total"], n=4) for _ in range(2)]
        flush()
    path = tmp_path / "after" / FILENAME
    with sqlite3.connect(path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM node_sets")}
    assert stored == {_stored(path, run.id)[1] for run in warm}


def test_warm_runs_of_many_nodes_read_back_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    flow = lf.Flow("long", cache=lf.Cache(disk=None))
    flow.node(lambda n: n, name="n0")
    for i in range(1, 12):
        flow.add(lf.Node(lambda prev: prev + 1, name=f"n{i}", inputs={"prev": f"n{i - 1}"}))
    names = list(flow.nodes)
    flow.run(names, n=1)
    warm = [flow.run(names, n=1) for _ in range(2)]
    recorded = lf.history(flow, limit=2)
    assert [r.id for r in recorded] == [run.id for run in reversed(warm)]
    for entry, run in zip(recorded, reversed(warm), strict=True):
        assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in run.nodes.values()]
    stored = [_stored(tmp_path / "h.sqlite", run.id) for run in warm]
    assert stored[0][1] is not None and stored[0][1] == stored[1][1]  # one node set


def test_every_run_of_a_large_batch_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(tmp_path / "h.sqlite"))
    flow = lf.Flow("many", cache=lf.Cache(disk=None))
    _chain(flow)
    runs = [flow.run("total", n=4) for _ in range(131)]  # inserted some dozens at a time
    recorded = lf.history(flow, limit=None)
    assert sorted(r.id for r in recorded) == sorted(r.id for r in runs)
    assert [_read(n) for n in recorded[0].nodes] == [_recorded(r) for r in runs[-1].nodes.values()]


def test_a_mixed_run_reads_back_its_computed_and_cached_nodes_exactly(beside_disk, tmp_path):
    beside_disk.run("total", n=4)
    mixed = beside_disk.run("total", n=4, scale=2)
    assert [(r.name, r.status) for r in mixed.nodes.values()] == [("raw", "cached"),
                                                                  ("total", "completed")]
    (entry,) = lf.history(beside_disk, limit=1)
    assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in mixed.nodes.values()]
    nodes, hits, times = _stored(tmp_path / FILENAME, mixed.id)
    assert (len(json.loads(nodes)), hits, times) == (2, None, None)  # JSON rows, as before


def test_a_failed_run_reads_back_its_error_and_the_nodes_it_skipped(flow):
    @flow.node
    def broken():
        raise ValueError("bad data in row 3")

    @flow.node
    def after(broken):
        return broken

    with pytest.raises(ValueError):
        flow.run("after")
    (entry,) = lf.history(flow, limit=1)
    assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in flow.last_run.nodes.values()]


# --------------------------------------------------------------------------- plain runs


def _hit(name: str, **fields: object) -> NodeRecord:
    record = NodeRecord(name, "cached", "memory", 0.0, "0f" * 16, 1796619183.3242168,
                        1796619183.3242168, "a1" * 16, 40, 8.656001227791421e-06)
    for field, value in fields.items():
        setattr(record, field, value)
    return record


def _plain_run(*records: NodeRecord) -> Run:
    return Run("plain", tuple(r.name for r in records), {r.name: r for r in records},
               status="completed", ended=1796619184.0)


def test_the_nodes_of_a_plain_run_read_back_exactly():
    records = [_hit("raw"), _hit("prep.total", size=None, saved=0.1 + 0.2, tier="disk"),
               _hit("big", size=2**62, saved=5e-324, started=1e-3, ended=1e-3)]
    plain = plain_row(_plain_run(*records))
    assert plain is not None
    row, (named, hits) = plain
    times = row[RUN_COLUMNS.index("node_times")]
    assert row[RUN_COLUMNS.index("node_set")] == named
    assert [_read(n) for n in expand(hits, times)] == [_recorded(r) for r in records]
    assert hits == node_set([(r.name, r.tier, r.key, r.digest, r.size, r.saved)
                             for r in records])
    assert times == node_times([r.started for r in records])


def test_a_run_alike_the_last_plain_run_of_its_shape_is_a_repeat_with_a_row_like_it():
    shape = shape_of(_plain_run(_hit("raw"), _hit("total")), {})
    assert plain_parts(_plain_run(_hit("raw"), _hit("total")), shape=shape) is not None
    run = _plain_run(_hit("raw", started=5.0, ended=5.0), _hit("total", started=6.0, ended=6.0))
    found = repeated(run, shape)
    assert found is not None
    plain, times = found
    assert times == node_times([5.0, 6.0])
    assert (repeat_row(plain, (run.id, run.started, run.ended, times)), plain.node_set) == \
        plain_row(run)


@pytest.mark.parametrize("records", [
    (_hit("raw", reason="computed meanwhile by another request"), _hit("total")),
    (_hit("raw"),),
    (_hit("raw"), _hit("total"), _hit("more")),
    (_hit("raw"), _hit("total", size=41)),
], ids=["a reason", "fewer nodes", "more nodes", "another size"])
def test_a_run_not_alike_the_last_plain_run_of_its_shape_is_no_repeat(records):
    shape = shape_of(_plain_run(_hit("raw"), _hit("total")), {})
    assert plain_parts(_plain_run(_hit("raw"), _hit("total")), shape=shape) is not None
    assert repeated(_plain_run(*records), shape) is None


@pytest.mark.parametrize("ending", [{"error": KeyboardInterrupt()}, {"status": "cancelled"}],
                         ids=["an error", "cancelled"])
def test_a_run_that_did_not_complete_without_an_error_is_no_repeat(ending):
    shape = shape_of(_plain_run(_hit("raw"), _hit("total")), {})
    assert plain_parts(_plain_run(_hit("raw"), _hit("total")), shape=shape) is not None
    run = _plain_run(_hit("raw"), _hit("total"))
    for field, value in ending.items():
        setattr(run, field, value)
    assert repeated(run, shape) is None


def test_the_rows_of_repeats_built_together_each_keep_their_own_times():
    runs = [(f"r{i}", float(i), i + 0.5, node_times([i + 0.1, i + 0.2])) for i in range(3)]
    owns = repeated_owns(runs)
    assert [own[:3] for own in owns] == [run[:3] for run in runs]
    assert [own[-1] for own in owns] == [run[3] for run in runs]
    assert {type(own[-1]) for own in owns} == {bytearray}  # bound as it is


@pytest.mark.parametrize("fields", [
    {"reason": "cached (computed with Python 3.12)"},
    {"status": "completed"},
    {"duration": 0.5},
    {"ended": 1796619184.0},
    {"tier": "two\nlines"},
    {"tier": "a\ttab"},
    {"key": None},
    {"error": ValueError("no")},
], ids=lambda fields: next(iter(fields)))
def test_a_node_that_is_not_a_plain_hit_keeps_the_run_in_json_rows(fields):
    assert plain_row(_plain_run(_hit("raw"), _hit("total", **fields))) is None


def test_a_reason_left_for_later_is_not_worked_out_on_the_requests_thread():
    worked_out: list[str] = []
    noted = _hit("total")
    noted.revise_reason_later(lambda reason: worked_out.append(reason) or "cached; noted")
    assert plain_row(_plain_run(_hit("raw"), noted)) is None  # not known plain: JSON rows
    assert worked_out == []
    assert finished_row(_plain_run(_hit("raw"), noted))[0][RUN_COLUMNS.index("nodes")] \
        .count("cached; noted") == 1  # the writer's rows read it


# --------------------------------------------------------------------------- runs going on


class _CommittingTier(MemoryTier):
    """A memory tier that has the history written while it stores a value: the writer
    reads the storing node's record after its status is set, before its size is."""

    def put(self, key, value, meta, **options):
        flush()
        return super().put(key, value, meta, **options)


def test_a_node_caught_mid_update_by_a_commit_is_read_again_when_it_finishes(tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "h.sqlite"
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(path))
    flow = lf.Flow("mid-update", cache=lf.Cache(tiers=[_CommittingTier(10**8)]))

    @flow.node
    def answer():
        return 42

    seen = []

    def when_answered(event) -> None:  # the run is still going: its progress row
        if isinstance(event, lf.NodeFinished):
            flush()
            with sqlite3.connect(path) as conn:
                status, nodes = conn.execute("SELECT status, nodes FROM runs").fetchone()
            seen.append((status, json.loads(nodes)[0][6], event.record.size))

    flow.run("answer", observers=[when_answered])
    (status, stored_size, size), = seen
    assert status == "running"
    assert size is not None and stored_size == size


def test_a_node_that_finishes_after_its_run_was_written_shows_at_the_next_commit(tmp_path,
                                                                               monkeypatch):
    path = tmp_path / "h.sqlite"
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(path))
    flow = lf.Flow("progress", cache=lf.Cache(disk=None))
    progress = []

    def committed() -> None:  # the run's row as the history holds it while it goes
        flush()
        with sqlite3.connect(path) as conn:
            status, nodes = conn.execute("SELECT status, nodes FROM runs WHERE flow = ?",
                                         (flow.name,)).fetchone()
        progress.append((status, [(n[0], n[1]) for n in json.loads(nodes)]))

    @flow.node
    def first():
        committed()  # the run is written here, going: from now on it is tracked
        return 1

    @flow.node
    def second(first):
        committed()
        return first + 1

    flow.run("second")
    assert progress == [("running", [("first", "running"), ("second", "pending")]),
                        ("running", [("first", "completed"), ("second", "running")])]


def test_a_recorder_handed_node_events_too_records_each_run_once_as_it_ended(beside_disk):
    unsubscribe = GLOBAL.subscribe(process_recorder()._on_event)  # node events included
    try:
        run = beside_disk.run(["raw", "total"], n=4)
    finally:
        unsubscribe()
    runs = lf.history(beside_disk, limit=None)
    assert [r.id for r in runs] == [run.id]
    assert (runs[0].status, [_read(n) for n in runs[0].nodes]) == \
        ("completed", [_recorded(r) for r in run.nodes.values()])


def test_the_history_takes_no_node_events(beside_disk):
    beside_disk.run(["raw", "total"], n=4)
    assert not GLOBAL.watches_nodes


def _flush_when_started(event) -> None:
    if isinstance(event, lf.RunStarted):
        flush()


def test_a_warm_run_going_at_a_commit_ends_as_one_row_sharing_its_node_set(beside_disk,
                                                                            tmp_path):
    beside_disk.run(["raw", "total"], n=4)
    first = beside_disk.run(["raw", "total"], n=4)
    seen = beside_disk.run(["raw", "total"], n=4, observers=[_flush_when_started])
    (entry,) = lf.history(beside_disk, limit=1)
    assert (entry.id, entry.status) == (seen.id, "completed")
    assert [_read(n) for n in entry.nodes] == [_recorded(r) for r in seen.nodes.values()]
    nodes, node_set, _ = _stored(tmp_path / FILENAME, seen.id)
    assert (nodes, node_set) == ("[]", _stored(tmp_path / FILENAME, first.id)[1])


# --------------------------------------------------------------------------- earlier versions


EARLIER = [1, 2]
"""The schemas of the committed histories ``history-v<N>.sqlite`` an earlier lazyflow wrote."""
ADDED_TO_RUNS = {"input_values": {}, "saved_metrics": {}}
ADDED_TO_NODES = {"cpu": None, "peak_memory": None, "metrics": None}
"""Fields schema 3 added, and how they read from a run recorded without them."""


@pytest.fixture(params=EARLIER, ids=lambda schema: f"schema {schema}")
def earlier(request, tmp_path) -> tuple[Path, int]:
    """A copy of a committed history an earlier lazyflow wrote, and its schema."""
    copy = tmp_path / f"history-v{request.param}.sqlite"
    shutil.copyfile(FIXTURES / copy.name, copy)
    return copy, request.param


def _as_recorded(schema: int) -> list[dict[str, object]]:
    return json.loads((FIXTURES / f"history-v{schema}.json").read_text())


def _as_read(runs: list[RunEntry]) -> list[dict[str, object]]:
    """What ``make_history_fixture.py`` saved of the runs: their JSON, without the path
    and the fields later schemas added."""
    read = []
    for r in runs:
        run = {k: v for k, v in r.to_dict().items() if k != "path" and k not in ADDED_TO_RUNS}
        run["nodes"] = [{k: v for k, v in n.items() if k not in ADDED_TO_NODES}
                        for n in run["nodes"]]
        read.append(json.loads(json.dumps(run)))
    return read


def test_a_history_of_an_earlier_schema_reads_back_as_it_was_recorded(earlier):
    path, schema = earlier
    runs = lf.history(None, limit=None, path=str(path))
    assert _as_read(runs) == _as_recorded(schema)


def test_a_run_of_an_earlier_schema_reads_the_fields_added_since_as_empty(earlier):
    runs = lf.history(None, limit=None, path=str(earlier[0]))
    assert runs
    for run in runs:
        assert {f: getattr(run, f) for f in ADDED_TO_RUNS} == ADDED_TO_RUNS
        for node in run.nodes:
            assert {f: getattr(node, f) for f in ADDED_TO_NODES} == ADDED_TO_NODES


def test_a_run_of_an_earlier_schema_shows_its_inputs_as_digests(earlier):
    run = lf.history(None, limit=1, path=str(earlier[0]))[0]
    assert f"inputs n={run.inputs['n'][:12]}" in run.summary()


def test_recording_goes_on_into_a_history_of_an_earlier_schema(earlier, monkeypatch):
    path, schema = earlier
    monkeypatch.setenv("LAZYFLOW_HISTORY", str(path))
    flow = lf.Flow("later", cache=lf.Cache(disk=None))
    _chain(flow)
    flow.run("total", n=3)
    warm = flow.run("total", n=3)
    runs = lf.history(None, limit=None, path=location(flow.cache))
    assert runs[0].id == warm.id
    assert [_read(n) for n in runs[0].nodes] == [_recorded(r) for r in warm.nodes.values()]
    assert runs[0].input_values == {"n": "3", "scale": "1"}
    assert _as_read(runs[2:]) == _as_recorded(schema)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_the_committed_history_of_this_schema_reads_back_as_it_was_recorded(tmp_path):
    copy = tmp_path / f"history-v{SCHEMA_VERSION}.sqlite"
    shutil.copyfile(FIXTURES / copy.name, copy)
    runs = lf.history(None, limit=None, path=str(copy))
    read = [json.loads(json.dumps({k: v for k, v in r.to_dict().items() if k != "path"}))
            for r in runs]
    recorded = _as_recorded(SCHEMA_VERSION)
    assert read == recorded
    # it holds every field this schema added, so a later schema is checked against them
    assert {"api_key": "<redacted>", "label": "'a.csv'", "n": "4"} in \
        [r["input_values"] for r in recorded]
    assert any(r["saved_metrics"] for r in recorded)
    nodes = [n for r in recorded for n in r["nodes"]]
    assert any(n["cpu"] is not None for n in nodes) and any(n["metrics"] for n in nodes)
