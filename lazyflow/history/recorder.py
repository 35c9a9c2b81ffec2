"""The writer: turns every flow's run events into history rows on a background thread.

The request's thread notes a run's start in a dict and queues its end; one
writer thread drains the queue every :data:`BATCH_SECONDS` (:func:`flush` and
exit drain it on their own thread), and commits each history's share in one
transaction. The recorder takes run events only (``subscribe(nodes=False)``):
a run's nodes are read from its records, so the engine builds no node event
for it (~0.5 µs a node: half the history's cost on a warm request of 100 hits).

A request's thread does as little as it can: each step of Python costs it
several times what the same step costs the writer, which repeats one loop over
a batch. Most runs (every warm request) are *repeats*: they completed without
an error and their nodes are the very ones of the last plain run of their
request shape (``rows.repeated``: one pass over the records, compared at
once). Of such a run the queue holds what its row has of its own, as tuples
(:data:`_Repeat`: its id, start, end, and when each hit was served), and the
writer builds the rows of a batch of them at once (``rows.repeated_owns``;
three columns fewer to bind than a plain run's, ``rows.REPEAT_OWN``).
Profiled (callgrind, ``benchmarks/history.py``, a one-hit warm request): the
row built whole on the request's thread cost it ~24,000 instructions, a repeat
~15,000; the writer's share stayed ~21,000 (SQLite ~14,000). Any other run
that ended with every node a plain hit has its row built on the request's
thread (``rows.plain_parts``: its hits as a node set shared with the runs alike,
which makes it the shape's last plain run), and the queue holds that row; any
other run is held itself until the writer builds its rows.

Nothing a run's records hold is kept past its request: keeping 100-node warm
runs alive until the writer read them made the cyclic GC, which a warm request
never wakes, walk them (a full collection every few hundred requests), and so
did holding the records of runs served from disk (their ancestries are
decoded afresh for each request: 100 containers a hit).

A run still going at a commit is inserted ``running`` with its nodes as they
stand, and from then on *tracked*: each commit reads its records again and
rewrites its row when one moved, so a process killed mid-run leaves its
progress up to the last commit. A record caught mid-update is read again at
the next commit, and the row of the run's end is built from its final records.
Reading them costs the writer ~0.3 µs a node a commit (a 10,000-node run going:
~1% of a core); node events cost the engine ~0.5 µs each, for every run.
"""

from __future__ import annotations

import atexit
import operator
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lazyflow.engine.events import GLOBAL, Event, RunFinished, RunStarted
from lazyflow.history.paths import location
from lazyflow.history.rows import (
    NodeSet,
    Params,
    Plain,
    Repeat,
    Shape,
    end_row,
    finished_row,
    joined,
    node_extras,
    node_row,
    nodes_json,
    plain_parts,
    repeat_row,
    repeated,
    repeated_owns,
    shape_of,
    started_row,
)
from lazyflow.history.store import Store
from lazyflow.model.shown import as_shown
from lazyflow.run import NodeRecord, Run

__all__ = ["BATCH_SECONDS", "Recorder", "flush", "process_recorder", "start_recording"]

BATCH_SECONDS = 0.25
"""Longest time an event waits in memory before the writer commits it."""


class _Ended:
    """A run ended, built on the request's thread: its row, when every node was a plain
    hit, else the run and its request's flow-input values shown (held until the writer
    builds the row)."""

    __slots__ = ("cache", "flow", "id", "params", "plain", "run")

    def __init__(self, run: Run, params: Params, shape: Shape | None = None) -> None:
        self.id, self.flow, self.cache = run.id, run.flow, run.cache
        try:
            self.plain = plain_parts(run, params, shape)
        except Exception:  # never fail a request for its history: the writer builds it
            self.plain = None
        self.run = run if self.plain is None else None
        # the values' texts, not the values: the writer builds the row later, and the
        # inputs (a large frame, say) must be free to go as soon as the request ends
        self.params = as_shown(params) if self.run is not None else None

    def finished(self) -> tuple[tuple[Any, ...], NodeSet | None]:
        """The run's ``runs`` row, and the node set it names."""
        if self.plain is not None:
            shared, own, node_set = self.plain
            return joined(shared, own), node_set
        assert self.run is not None and self.params is not None
        return finished_row(self.run, self.params)


_Repeat = tuple[Plain, Any, str, Repeat]
"""A repeat (``rows.repeated``): (the last plain run of its shape, its cache, its flow,
what its row has of its own); tuples, as the request's thread builds them at the least
cost."""
_Item = _Ended | _Repeat


def _row_of(item: _Item) -> tuple[tuple[Any, ...], NodeSet | None]:
    """A run's ``runs`` row, and the node set it names."""
    if isinstance(item, _Ended):
        return item.finished()
    return repeat_row(item[0], item[3]), item[0].node_set


# a record's fields a node row is built from (rows.node_row), read in one C call: a
# tracked run's records are compared with these at each commit
_FIELDS = operator.attrgetter("name", "status", "tier", "key", "digest", "duration", "size",
                              "saved", "started", "ended", "reason", "error", "cpu",
                              "peak_memory", "metrics")


@dataclass(slots=True)
class _Tracked:
    """A run written while it goes: where, its records' fields as last read, and its node
    rows built from them."""

    run: Run
    path: str
    seen: list[tuple[Any, ...]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def advance(self) -> bool:
        """Read the run's records again; whether one moved since the last read."""
        records: list[NodeRecord] = list(self.run.nodes.values())  # one C call: no
        # node joining the run (vanished.py) can change the dict while it is read
        now = list(map(_FIELDS, records))
        seen, rows = self.seen, self.rows
        if now == seen:
            return False
        for i, fields in enumerate(now):
            if i >= len(seen):
                rows.append(node_row(records[i]))
            elif fields != seen[i]:
                rows[i] = node_row(records[i])
        self.seen = now
        return True

    def progress(self) -> tuple[str, str, str | None]:
        """(run id, nodes, node extras): the arguments of a progress update."""
        return self.run.id, nodes_json(self.rows), node_extras(self.rows)


@dataclass(slots=True)
class _Commit:
    """One history's share of a batch: the arguments of :meth:`Store.write`."""

    new: list[tuple[Any, ...]] = field(default_factory=list)
    progress: list[tuple[str, str, str | None]] = field(default_factory=list)
    ended: list[tuple[Any, ...]] = field(default_factory=list)
    node_sets: dict[bytes, bytes] = field(default_factory=dict)
    # new plain runs by their shared columns (rows.plain_parts; by identity: a tuple of
    # the runs alike), each with the own columns of its runs
    plain: dict[int, tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = \
        field(default_factory=dict)
    # new repeats (rows.repeated) by the plain run they repeat, with their own columns
    repeats: dict[int, tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = \
        field(default_factory=dict)

    def add(self, rows: list[tuple[Any, ...]], row: tuple[Any, ...],
            node_set: NodeSet | None) -> None:
        """Append ``row`` to ``rows`` (``new`` or ``ended``), with the node set it names."""
        rows.append(row)
        if node_set is not None:
            self.node_sets[node_set[0]] = node_set[1]

    def add_plain(self, shared: tuple[Any, ...], node_set: NodeSet,
                  owns: list[tuple[Any, ...]]) -> None:
        """Add new plain runs alike: their shared columns, the node set those name, and
        each one's own columns."""
        runs = self.plain.get(id(shared))
        if runs is None:
            runs = self.plain[id(shared)] = (shared, [])
            self.node_sets[node_set[0]] = node_set[1]
        runs[1].extend(owns)

    def add_repeats(self, plain: Plain, owns: list[tuple[Any, ...]]) -> None:
        """Add new repeats of ``plain``: each one's own columns (``rows.REPEAT_OWN``)."""
        runs = self.repeats.get(id(plain))
        if runs is None:
            runs = self.repeats[id(plain)] = (plain.shared, [])
            self.node_sets[plain.node_set[0]] = plain.node_set[1]
        runs[1].extend(owns)


class Recorder:
    """Turns the events of every flow into history rows, written in the background."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._stores_lock = threading.Lock()
        self._reset()
        self._unsubscribe = GLOBAL.subscribe(self._on_event, nodes=False)
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """Start empty (also in a forked child: SQLite connections must not cross a fork)."""
        self._pending: deque[_Item] = deque()
        self._stores = {}
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # runs started and not ended, by the event that said so (with the request's
        # flow-input values; the request's threads add and remove them; a run going is
        # alive anyway, and so are its values, so holding them costs the cyclic GC nothing)
        self._going: dict[str, RunStarted] = {}
        # runs written while going (the writer's own)
        self._tracked: dict[str, _Tracked] = {}

    # ----------------------------------------------------------------- request's thread

    def _on_event(self, event: Event) -> None:
        """A run started or finished (subscribed without node events)."""
        if type(event) is RunStarted:
            self._going[event.run.id] = event
            if self._thread is None:
                self._start()
            return
        if type(event) is not RunFinished:  # a node event: subscribed with them, it reads none
            return
        run = event.run
        started = self._going.pop(run.id, None)
        if started is None:  # it started before the recorder listened: not recorded
            return
        shape: Shape | None = None
        found = None
        try:
            shape = shape_of(run, started.params)
            found = repeated(run, shape)
        except Exception:  # never fail a request for its history: the writer builds it
            pass
        self._pending.append(
            _Ended(run, started.params, shape) if found is None
            else (found[0], run.cache, run.flow, (run.id, run.started, run.ended, found[1])))

    def _start(self) -> None:
        with self._drain_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lazyflow-history",
                                                daemon=True)
                self._thread.start()

    # ----------------------------------------------------------------- writer's thread

    def flush(self) -> None:
        """Block until every event emitted so far is committed.

        The calling thread commits: it waits for a commit the writer has under way (the
        drain lock), then drains what is left. Handing the batch to the writer thread and
        waiting cost two thread wake-ups a flush (~120 µs of CPU in
        ``benchmarks/history.py``, ~1 µs a warm run flushed every 100).
        """
        self._drain()

    def store(self, path: str) -> Store:
        """The store for ``path``, opened once per process."""
        with self._stores_lock:
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = Store(path)
            return store

    def known_paths(self) -> list[str]:
        """Every history this process has written to or read."""
        with self._stores_lock:
            return list(self._stores)

    def _loop(self) -> None:
        while True:
            time.sleep(BATCH_SECONDS)  # one wake-up a batch: nothing else wakes the writer
            self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            batch: list[_Item] = []
            while self._pending:
                batch.append(self._pending.popleft())
            # runs going that no commit has written yet (a long run queues nothing)
            going = [(started.run, started.params)
                     for run_id, started in list(self._going.items())
                     if run_id not in self._tracked]
            if not batch and not going and not self._tracked:
                return
            try:
                self._write(batch, going)
            except Exception as e:  # history must never break a run or the interpreter
                _warn(f"could not write run history ({type(e).__name__}: {e}); not recorded: "
                      f"{_runs_of(batch, going)}")

    def _write(self, batch: list[_Item], going: list[tuple[Run, Params]]) -> None:
        commits = _Commits()
        ended: dict[int, tuple[Any, list[_Ended]]] = {}  # by cache: most batches have one
        repeats: dict[tuple[int, int], list[_Repeat]] = {}  # by plain run and cache
        tracked = self._tracked
        for item in batch:
            if isinstance(item, _Ended):
                if tracked and item.id in tracked:
                    self._end(commits, item.id, item)
                    continue
                group = ended.get(id(item.cache))
                if group is None:
                    group = ended[id(item.cache)] = (item.cache, [])
                group[1].append(item)
                continue
            if tracked and item[3][0] in tracked:
                self._end(commits, item[3][0], item)
                continue
            key = (id(item[0]), id(item[1]))
            alike = repeats.get(key)
            if alike is None:
                alike = repeats[key] = []
            alike.append(item)
        for found in tracked.values():  # still going: their nodes that moved
            if found.advance():
                commits.share(found.path).progress.append(found.progress())
        for cache, items in ended.values():
            path = location(cache)
            if path is not None:
                share = commits.share(path)
                for item in items:
                    if item.plain is None:
                        share.add(share.new, *item.finished())
                    else:
                        share.add_plain(item.plain[0], item.plain[2], [item.plain[1]])
        for alike in repeats.values():
            plain, cache = alike[0][0], alike[0][1]
            path = location(cache)
            if path is not None:
                commits.share(path).add_repeats(plain,
                                                repeated_owns([item[3] for item in alike]))
        for run, params in going:  # written now, tracked from now on
            path = location(run.cache)
            if path is not None:
                tracked_now = self._track(run, path)
                commits.share(path).new.append(started_row(run, tracked_now.rows, params))
        for path, share in commits.shares.items():
            self.store(path).write(share.new, share.progress, share.ended, share.node_sets,
                                   plain=share.plain.values(), repeats=share.repeats.values())

    def _end(self, commits: _Commits, run_id: str, item: _Item) -> None:
        """A run written while going ended: its row is rewritten as it ended."""
        share = commits.share(self._tracked.pop(run_id).path)
        row, node_set = _row_of(item)
        share.add(share.ended, end_row(row), node_set)

    def _track(self, run: Run, path: str) -> _Tracked:
        tracked = self._tracked[run.id] = _Tracked(run, path)
        tracked.advance()
        return tracked


class _Commits:
    """What one batch writes, per history."""

    def __init__(self) -> None:
        self.shares: dict[str, _Commit] = {}

    def share(self, path: str) -> _Commit:
        """What this batch writes to the history at ``path``."""
        found = self.shares.get(path)
        if found is None:
            found = self.shares[path] = _Commit()
        return found


_RECORDER: Recorder | None = None
# first runs may start on several threads at once (flow.submit): one recorder, subscribed once
_RECORDER_LOCK = threading.Lock()


def process_recorder() -> Recorder:
    """This process's recorder, made (and subscribed) on first use."""
    global _RECORDER
    if _RECORDER is None:
        with _RECORDER_LOCK:
            if _RECORDER is None:
                made = Recorder()
                atexit.register(made.flush)
                _RECORDER = made
    return _RECORDER


_DECIDED = False  # whether this process's first run has decided to record


def start_recording() -> None:
    """Subscribe the recorder before the process's first run (later calls cost a flag test).

    Decided once, on that first run: ``LAZYFLOW_HISTORY=off`` then records
    nothing and costs nothing (reading the history still works).
    """
    global _DECIDED
    if _DECIDED:
        return
    if location(None) is not None:
        process_recorder()  # subscribed before any thread's run can pass the flag test above
    _DECIDED = True


def flush() -> None:
    """Wait until every run event emitted so far in this process is in the history."""
    process_recorder().flush()


def _runs_of(batch: list[_Item], going: list[tuple[Run, Params]]) -> str:
    """``run 20261125-165012-3f9a1c of flow 'a', ...``: the runs a failed commit held."""
    runs = [(item.id, item.flow) if isinstance(item, _Ended) else (item[3][0], item[2])
            for item in batch]
    runs += [(run.id, run.flow) for run, _ in going]
    shown = ", ".join(f"run {run_id} of flow {flow!r}" for run_id, flow in runs[:3])
    return shown + (f" and {len(runs) - 3} more" if len(runs) > 3 else "") or "no run"


def _warn(message: str) -> None:
    from lazyflow.errors import LazyflowWarning, warn

    warn(message, LazyflowWarning)
