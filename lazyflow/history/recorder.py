"""The writer: turns every flow's run events into history rows on a background thread.

The request's thread notes a run's start in a dict and queues its end; one
writer thread drains the queue every :data:`BATCH_SECONDS` (:func:`flush` and
exit drain it on their own thread), and commits each history's share in one
transaction. The recorder takes run events only (``subscribe(nodes=False)``):
a run's nodes are read from its records, so the engine builds no node event
for it (~0.5 µs a node: half the history's cost on a warm request of 100 hits).

Most runs (every warm request) start and end between two commits: they are
written once, as one row. A run whose every node was a plain cache hit has its
row built when it ends, on the request's thread (``rows.plain_parts``: its hits
as a node set shared with the runs alike, ~0.3 µs a node), and the queue holds
that row, not the run. Profiled: keeping 100-node warm runs alive until the
writer read them made the cyclic GC, which a warm request otherwise never
wakes, walk their records (a full collection every few hundred requests),
which cost more than building the rows; so did queueing their records as
tuples of plain values (100 a run trigger collections before the GC stops
tracking them). Any other run is queued itself and its rows built by the
writer.

A run still going at a commit is inserted ``running`` with its nodes as they
stand, and from then on *tracked*: each commit reads its records again and
rewrites its row when one moved, so a process killed mid-run leaves its
progress up to the last commit. A record caught mid-update is read again at
the next commit, and the row of the run's end is built from its final records.
Reading them costs the writer ~0.2 µs a node a commit (a 10,000-node run going:
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

from lazyflow.engine.events import GLOBAL, Event, RunStarted
from lazyflow.history.paths import location
from lazyflow.history.rows import (
    NodeSet,
    Params,
    end_row,
    finished_row,
    joined,
    node_extras,
    node_row,
    nodes_json,
    plain_parts,
    started_row,
)
from lazyflow.history.store import Store
from lazyflow.model.shown import as_shown
from lazyflow.run import NodeRecord, Run

__all__ = ["BATCH_SECONDS", "Recorder", "flush", "process_recorder", "start_recording"]

BATCH_SECONDS = 0.25
"""Longest time an event waits in memory before the writer commits it."""


class _Ended:
    """A run ended: its row, built at once when every node was a plain hit, else the run
    and its request's flow-input values (held until the writer builds the row).

    ``seen``: its start was seen (a run started before the recorder listened is
    not recorded).
    """

    __slots__ = ("cache", "flow", "id", "params", "plain", "run", "seen")

    def __init__(self, run: Run, params: Params | None) -> None:
        self.id, self.flow, self.cache, self.seen = run.id, run.flow, run.cache, \
            params is not None
        try:
            self.plain = plain_parts(run, params) if params is not None else None
        except Exception:  # never fail a request for its history: the writer builds it
            self.plain = None
        self.run = run if self.plain is None and params is not None else None
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

    def add(self, rows: list[tuple[Any, ...]], row: tuple[Any, ...],
            node_set: NodeSet | None) -> None:
        """Append ``row`` to ``rows`` (``new`` or ``ended``), with the node set it names."""
        rows.append(row)
        if node_set is not None:
            self.node_sets[node_set[0]] = node_set[1]


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
        self._pending: deque[_Ended] = deque()
        self._stores = {}
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # runs started and not ended, with their requests' flow-input values (the
        # request's threads add and remove them; a run going is alive anyway, and so are
        # its values, so holding them here costs the cyclic GC nothing)
        self._going: dict[str, tuple[Run, Params]] = {}
        # runs written while going (the writer's own)
        self._tracked: dict[str, _Tracked] = {}

    # ----------------------------------------------------------------- request's thread

    def _on_event(self, event: Event) -> None:
        """A run started or finished (subscribed without node events)."""
        run = event.run
        if type(event) is RunStarted:
            self._going[run.id] = (run, event.params)  # type: ignore[union-attr]
            if self._thread is None:
                self._start()
        else:
            going = self._going.pop(run.id, None)
            self._pending.append(_Ended(run, None if going is None else going[1]))

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
            batch: list[_Ended] = []
            while self._pending:
                batch.append(self._pending.popleft())
            # runs going that no commit has written yet (a long run queues nothing)
            going = [started for run_id, started in list(self._going.items())
                     if run_id not in self._tracked]
            if not batch and not going and not self._tracked:
                return
            try:
                self._write(batch, going)
            except Exception as e:  # history must never break a run or the interpreter
                _warn(f"could not write run history ({type(e).__name__}: {e}); not recorded: "
                      f"{_runs_of(batch, going)}")

    def _write(self, batch: list[_Ended], going: list[tuple[Run, Params]]) -> None:
        commits = _Commits()
        ended: dict[int, tuple[Any, list[_Ended]]] = {}  # by cache: most batches have one
        for item in batch:
            tracked = self._tracked.pop(item.id, None) if self._tracked else None
            if tracked is not None:  # written while going: now how it ended
                share = commits.share(tracked.path)
                row, node_set = item.finished()
                share.add(share.ended, end_row(row), node_set)
            elif item.seen:
                group = ended.get(id(item.cache))
                if group is None:
                    group = ended[id(item.cache)] = (item.cache, [])
                group[1].append(item)
        for found in self._tracked.values():  # still going: their nodes that moved
            if found.advance():
                commits.share(found.path).progress.append(found.progress())
        for cache, items in ended.values():
            path = location(cache)
            if path is not None:
                share = commits.share(path)
                for item in items:
                    if item.plain is None:
                        share.add(share.new, *item.finished())
                        continue
                    shared, own, node_set = item.plain
                    runs = share.plain.get(id(shared))
                    if runs is None:
                        runs = share.plain[id(shared)] = (shared, [])
                        share.node_sets[node_set[0]] = node_set[1]
                    runs[1].append(own)
        for run, params in going:  # written now, tracked from now on
            path = location(run.cache)
            if path is not None:
                tracked = self._track(run, path)
                commits.share(path).new.append(started_row(run, tracked.rows, params))
        for path, share in commits.shares.items():
            self.store(path).write(share.new, share.progress, share.ended, share.node_sets,
                                   plain=share.plain.values())

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


def _runs_of(batch: list[_Ended], going: list[tuple[Run, Params]]) -> str:
    """``run 20261125-165012-3f9a1c of flow 'a', ...``: the runs a failed commit held."""
    runs = [(item.id, item.flow) for item in batch if item.seen]
    runs += [(run.id, run.flow) for run, _ in going]
    shown = ", ".join(f"run {run_id} of flow {flow!r}" for run_id, flow in runs[:3])
    return shown + (f" and {len(runs) - 3} more" if len(runs) > 3 else "") or "no run"


def _warn(message: str) -> None:
    from lazyflow.errors import LazyflowWarning, warn

    warn(message, LazyflowWarning)
