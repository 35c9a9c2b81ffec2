"""The writer: turns every flow's run events into history rows on a background thread.

The run thread only appends to a deque; one writer thread drains it every
:data:`BATCH_SECONDS`, on :func:`flush` and at exit, and commits each history's
share of the batch in one transaction.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import deque
from typing import Any

from lazyflow.engine.events import GLOBAL, Event, NodeFinished, NodeStarted, RunFinished, RunStarted
from lazyflow.history.paths import location
from lazyflow.history.rows import end_row, node_row, pending_row, run_row
from lazyflow.history.store import Store
from lazyflow.run import Run

__all__ = ["BATCH_SECONDS", "Recorder", "flush", "process_recorder", "start_recording"]

BATCH_SECONDS = 0.25
"""Longest time an event waits in memory before the writer commits it."""


class Recorder:
    """Turns the events of every flow into history rows, written in the background."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._stores_lock = threading.Lock()
        self._reset()
        self._unsubscribe = GLOBAL.subscribe(self._on_event)
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        """Start empty (also in a forked child: SQLite connections must not cross a fork)."""
        # node events as (run id, node name): two strings, which the cyclic GC stops tracking
        # at once, where an event object it would walk (and promote) while it waits here
        self._pending: deque[Event | tuple[str, str] | threading.Event] = deque()
        self._runs: dict[str, Run] = {}  # runs started and not yet written as ended
        self._stores = {}
        self._wake = threading.Event()
        self._drain_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._live: dict[str, tuple[str, dict[str, int], list[tuple[Any, ...]]]] = {}

    # ----------------------------------------------------------------- run thread side

    def _on_event(self, event: Event) -> None:
        kind = type(event)
        if kind is NodeFinished:
            self._pending.append((event.run.id, event.record.name))  # type: ignore[union-attr]
        elif kind is NodeStarted:
            self._pending.append((event.run.id, event.name))  # type: ignore[union-attr]
        else:
            if kind is RunStarted:
                self._runs[event.run.id] = event.run
            self._pending.append(event)
            if self._thread is None and kind is RunStarted:
                self._start()

    def _start(self) -> None:
        with self._drain_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lazyflow-history",
                                                daemon=True)
                self._thread.start()

    # ----------------------------------------------------------------- writer side

    def flush(self) -> None:
        """Block until every event emitted so far is committed."""
        if self._thread is None or not self._thread.is_alive():
            self._drain()
            return
        done = threading.Event()
        self._pending.append(done)
        self._wake.set()
        done.wait()

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
            self._wake.wait(timeout=BATCH_SECONDS)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        with self._drain_lock:
            batch: list[Event | tuple[str, str] | threading.Event] = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                return
            try:
                self._write([item for item in batch if not isinstance(item, threading.Event)])
            except Exception as e:  # history must never break a run or the interpreter
                _warn(f"could not write run history ({type(e).__name__}: {e})")
            finally:
                for item in batch:
                    if isinstance(item, threading.Event):  # a flush waiting for this batch
                        item.set()

    def _write(self, batch: list[Event | tuple[str, str]]) -> None:
        per_store: dict[str, tuple[list[Any], set[str], list[Any]]] = {}
        for event in batch:
            if isinstance(event, tuple):  # a node started or finished
                found = self._runs.get(event[0])
                if found is None:  # its run started before this recorder listened
                    continue
                run = found
            else:
                run = event.run
                if isinstance(event, RunFinished):
                    self._runs.pop(run.id, None)
            live = self._live.get(run.id)
            if live is None:
                path = location(run.cache)
                if path is None:
                    continue
                # the node rows of a run in progress: pending until its events say otherwise
                live = self._live[run.id] = (path, {name: i for i, name in enumerate(run.nodes)},
                                             [pending_row(name) for name in run.nodes])
            path, seqs, rows = live
            started, touched, ended = per_store.setdefault(path, ([], set(), []))
            if isinstance(event, tuple):  # read now: the record's latest state
                seq = seqs.get(event[1])
                if seq is None:  # taken on mid-run (the ancestors of an entry that vanished)
                    seq = seqs[event[1]] = len(rows)
                    rows.append(pending_row(event[1]))
                rows[seq] = node_row(run.nodes[event[1]])
                touched.add(run.id)
            elif isinstance(event, RunStarted):
                started.append(run)
            else:
                touched.add(run.id)
                ended.append(end_row(run))
        for path, (started, touched, ended) in per_store.items():
            # a run started in this batch is inserted with its rows as they are now
            new = {run.id for run in started}
            progress = [(run_id, json.dumps(self._live[run_id][2])) for run_id in touched
                        if run_id not in new]
            self.store(path).write([run_row(run, self._live[run.id][2]) for run in started],
                                   progress, ended)
        for row in (r for _, (_, _, ended) in per_store.items() for r in ended):
            self._live.pop(row[-1], None)


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


def _warn(message: str) -> None:
    import warnings

    from lazyflow.errors import LazyflowWarning

    warnings.warn(message, LazyflowWarning, stacklevel=2)
