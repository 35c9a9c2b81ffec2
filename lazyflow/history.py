"""Run history: every run and every node it touched, in SQLite beside the disk cache.

Design note
-----------
Policy. A :class:`Recorder` subscribes to :data:`lazyflow.engine.events.GLOBAL`, so
every flow's runs are recorded without the engine knowing (it never prints or
writes history itself). It subscribes on the process's first run
(``Flow.run`` calls :func:`start_recording`), not at import: importing
lazyflow starts no thread and leaves the bus empty, so a process that never
runs a flow builds no event objects for it. The run thread does almost nothing: each event appends
to a deque, a node event as its (run id, node name) pair — two strings, which
the cyclic GC stops tracking at once — and the writer reads the node's record
when it drains (a record is final once its ``NodeFinished`` is emitted, so it
needs no copy). One background writer thread drains the deque
and commits a whole batch in one SQLite transaction every
:data:`BATCH_SECONDS`, on :func:`flush` and at interpreter exit. So a run
pays a few deque appends, never a disk write; a process killed loses at most
the last quarter second of events (a run killed sooner than that after it
started may be missing; a longer one is there, marked interrupted).

State. One SQLite file per cache directory (``<disk dir>/history.sqlite``),
in WAL mode so readers (``lazyflow runs``, another kernel) never block
writers and two processes can record concurrently (``busy_timeout`` makes
them queue). Table ``runs``: one row per run, written ``running`` when it
starts and updated when it ends; its ``nodes`` column holds the run's node
rows as one JSON array, rewritten at each commit while the run goes, and the
view ``nodes`` shows them as one SQL row per (run, node). One JSON write per
run per commit costs a sixth of a row insert per node (measured: 1.6 µs
against 5-10 µs per node), which is what keeps a warm run cheap.
A flow without a disk tier keeps its history in an in-memory database for
the life of the process: nothing is written to disk that was not asked for,
yet ``lf.history()`` still lists its runs. ``LAZYFLOW_HISTORY`` names another
file, or ``off`` disables recording.

A run whose process died (SIGKILL, power cut) stays ``running`` in the file;
every transaction is atomic, so the record is consistent up to the last
commit. Readers report such a run as ``interrupted`` (and rewrite it so) once
its process is gone: same host, and no live process with that pid and start
time (pids are reused).

A damaged file ("file is not a database", "malformed"), found when the store
opens it or when a statement first fails, is moved aside to
``history.sqlite.damaged-<timestamp>`` (``cache/quarantine.py``: never
deleted, its rows may be recoverable) and recording goes on in a fresh file,
with one :class:`~lazyflow.errors.CacheWarning` naming both paths.

Rejected: writing synchronously from the run thread (a commit costs more than
a whole warm request, 20 µs here) and one file per run (``lazyflow runs``
would have to open thousands of files).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import re
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lazyflow._version import __version__
from lazyflow.cache.quarantine import is_damage, is_damaged, recovering, set_aside
from lazyflow.engine.events import GLOBAL, Event, NodeFinished, NodeStarted, RunFinished, RunStarted
from lazyflow.run import NodeRecord, Run, _seconds, _table

if TYPE_CHECKING:
    from lazyflow.api import Flow

__all__ = ["BATCH_SECONDS", "BUSY_SECONDS", "FILENAME", "NodeEntry", "RunEntry", "Runs", "default_cache_dir",
           "find", "flush", "history", "location", "open_store", "start_recording"]

FILENAME = "history.sqlite"
"""The history file's name inside a cache directory."""
BATCH_SECONDS = 0.25
"""Longest time an event waits in memory before the writer commits it."""
BUSY_SECONDS = 30.0
"""Longest time a write waits for another process's lock on the history file."""
MEMORY = ":memory:"

_NODE_FIELDS = ("name", "status", "tier", "key", "digest", "duration", "size", "saved",
                "started", "ended", "reason", "error_type", "error_message")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, flow TEXT NOT NULL, targets TEXT NOT NULL, inputs TEXT NOT NULL,
    status TEXT NOT NULL, started REAL NOT NULL, ended REAL, executor TEXT,
    host TEXT, pid INTEGER, pid_start TEXT, environment TEXT,
    error_type TEXT, error_message TEXT, nodes TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started);
CREATE INDEX IF NOT EXISTS runs_by_flow ON runs (flow, started);
CREATE VIEW IF NOT EXISTS nodes AS
    SELECT runs.id AS run_id, CAST(node.key AS INTEGER) AS seq, """ + ", ".join(
    f"json_extract(node.value, '$[{i}]') AS {name}" for i, name in enumerate(_NODE_FIELDS)) + """
    FROM runs, json_each(runs.nodes) AS node;
"""
_RUN_COLUMNS = ("id", "flow", "targets", "inputs", "status", "started", "ended", "executor",
                "host", "pid", "pid_start", "environment", "error_type", "error_message", "nodes")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of a recorded run (the stored form of a :class:`~lazyflow.NodeRecord`).

    ``status`` is the record's final status, or ``"interrupted"`` when the run's
    process died before the node finished.
    """

    name: str
    status: str
    tier: str | None = None
    key: str | None = None
    digest: str | None = None
    duration: float = 0.0
    size: int | None = None
    saved: float = 0.0
    started: float | None = None
    ended: float | None = None
    reason: str = ""
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class RunEntry:
    """One recorded run: what was asked, how it ended, where, and every node it touched.

    ``inputs`` maps each flow input to its value digest; ``environment`` holds
    the Python version, platform, lazyflow version and the versions of the
    packages the nodes' code uses.
    """

    id: str
    flow: str
    targets: tuple[str, ...]
    inputs: dict[str, str]
    status: str
    started: float
    ended: float | None
    executor: str | None
    host: str | None
    pid: int | None
    environment: dict[str, Any]
    error_type: str | None = None
    error_message: str | None = None
    nodes: tuple[NodeEntry, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def duration(self) -> float | None:
        """Wall-clock seconds, or ``None`` when the run never ended."""
        return None if self.ended is None else self.ended - self.started

    def counts(self) -> dict[str, int]:
        """How many nodes ended in each status."""
        out: dict[str, int] = {}
        for node in self.nodes:
            out[node.status] = out.get(node.status, 0) + 1
        return out

    def node(self, name: str) -> NodeEntry:
        """The entry of node ``name``; ``KeyError`` listing the recorded ones otherwise."""
        for entry in self.nodes:
            if entry.name == name:
                return entry
        raise KeyError(f"run {self.id} recorded no node {name!r}; it has "
                       f"{', '.join(n.name for n in self.nodes) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (what ``lazyflow show --json`` prints)."""
        out = asdict(self)
        out["targets"] = list(self.targets)
        out["duration"] = self.duration
        return out

    def summary(self) -> str:
        """A readable report: the run's facts, then one row per node."""
        when = _timestamp(self.started)
        took = "-" if self.duration is None else _seconds(self.duration)
        lines = [f"run {self.id}  flow {self.flow!r}  targets {', '.join(self.targets)}",
                 f"status {self.status}  started {when}  took {took}  "
                 f"executor {self.executor or '-'}  host {self.host}  pid {self.pid}"]
        if self.error_type:
            lines.append(f"error {self.error_type}: {self.error_message}")
        if self.inputs:
            lines.append("inputs " + ", ".join(f"{k}={v[:12]}" for k, v in self.inputs.items()))
        env = self.environment
        if env:
            packages = ", ".join(f"{k}=={v}" for k, v in env.get("packages", {}).items())
            lines.append(f"python {env.get('python')}  {env.get('platform')}  "
                         f"lazyflow {env.get('lazyflow')}" + (f"  {packages}" if packages else ""))
        rows: list[tuple[str, ...]] = [("node", "status", "tier", "time", "key", "why")]
        for n in self.nodes:
            rows.append((n.name, n.status, n.tier or "-",
                         _seconds(n.duration) if n.status in ("completed", "failed") else "-",
                         (n.key or "")[:12],
                         n.reason if not n.error_type else f"{n.error_type}: {n.error_message}"))
        return "\n".join(lines) + "\n" + _table(rows)


class Runs(list[RunEntry]):
    """The list :func:`history` returns: newest first, with a table view."""

    def to_frame(self) -> Any:
        """One row per run as a pandas ``DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Runs.to_frame() needs pandas: pip install pandas") from e
        rows = [{"id": r.id, "flow": r.flow, "targets": ",".join(r.targets),
                 "status": r.status, "started": pd.Timestamp(r.started, unit="s"),
                 "duration": r.duration, "executor": r.executor,
                 **{f"n_{s}": c for s, c in r.counts().items()}} for r in self]
        frame = pd.DataFrame(rows)
        count_columns = [c for c in frame.columns if c.startswith("n_")]
        frame[count_columns] = frame[count_columns].fillna(0).astype(int)
        return frame

    def __str__(self) -> str:
        rows: list[tuple[str, ...]] = [("id", "flow", "targets", "status", "started", "took", "nodes")]
        for r in self:
            rows.append((r.id, r.flow, ",".join(r.targets), r.status, _timestamp(r.started),
                         "-" if r.duration is None else _seconds(r.duration),
                         ", ".join(f"{c} {s}" for s, c in r.counts().items())))
        return _table(rows)


# --------------------------------------------------------------------------- the store


class Store:
    """One history database: schema, batched writes, queries.

    Safe to share between threads of a process (one connection behind a lock);
    several processes share a file through SQLite's own locking.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path != MEMORY:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        with self._lock:
            try:
                self._connect()
            except sqlite3.DatabaseError as e:
                if not is_damage(e) or path == MEMORY:
                    raise
                self._replace_file(e)

    def _connect(self) -> None:
        self._conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, check_same_thread=False,
                                     isolation_level=None)
        _when_unlocked(self._set_up)

    def _replace_file(self, error: sqlite3.DatabaseError) -> None:
        """Set the damaged file aside, start a fresh one, then warn (once per damaged file).

        Called with the lock held.
        """
        self._conn.close()
        # not damaged on a fresh connection: another process set it aside already
        moved = set_aside(self.path) if is_damaged(self.path) else None
        self._connect()
        if moved is not None:
            _warn_damaged(self.path, moved, error)

    def _recover(self, broken: sqlite3.Connection, error: sqlite3.DatabaseError) -> None:
        """Called by :func:`recovering` when a statement found the file damaged."""
        if self.path == MEMORY:
            raise error
        with self._lock:
            if self._conn is broken:  # else another thread recovered while this one failed
                self._replace_file(error)

    def _set_up(self) -> None:
        """WAL mode and the schema (both no-ops on a file another process set up)."""
        if self.path != MEMORY:
            if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)

    @recovering("_conn")
    def write(self, started: Iterable[tuple[Any, ...]], progress: Iterable[tuple[str, str]],
              ended: Iterable[tuple[Any, ...]]) -> None:
        """Commit new runs, node progress (run id, nodes JSON) and endings in one transaction."""
        with self._lock, self._transaction():
            self._conn.executemany(
                f"INSERT OR IGNORE INTO runs ({', '.join(_RUN_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_RUN_COLUMNS))})", started)
            self._conn.executemany("UPDATE runs SET nodes = ? WHERE id = ?",
                                   ((nodes, run_id) for run_id, nodes in progress))
            self._conn.executemany(
                "UPDATE runs SET status = ?, ended = ?, error_type = ?, error_message = ? "
                "WHERE id = ?", ended)

    @recovering("_conn")
    def runs(self, *, flow: str | None = None, limit: int | None = 20,
             run_id: str | None = None) -> list[RunEntry]:
        """Recorded runs, newest first; ``run_id`` may be a unique prefix."""
        self._settle_dead()
        where: list[str] = []
        args: list[Any] = []
        if flow is not None:
            where.append("flow = ?")
            args.append(flow)
        if run_id is not None:
            where.append("id LIKE ? ESCAPE '\\'")
            args.append(run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                        + "%")
        sql = (f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
               + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY started DESC, id DESC"
               + (" LIMIT ?" if limit is not None else ""))
        if limit is not None:
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [_run_entry(row, self.path) for row in rows]

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _settle_dead(self) -> None:
        """Rewrite runs left ``running`` by a process that is gone as ``interrupted``."""
        host = socket.gethostname()
        with self._lock:
            running = self._conn.execute(
                "SELECT id, pid, pid_start, nodes FROM runs WHERE status = 'running' AND host = ?",
                (host,)).fetchall()
        dead = [(run_id, nodes) for run_id, pid, start, nodes in running
                if not _alive(pid, start)]
        if not dead:
            return
        with self._lock, self._transaction():
            for run_id, nodes in dead:
                rows = json.loads(nodes)
                for row in rows:
                    if row[1] in ("pending", "running"):
                        row[1], row[10] = "interrupted", "the run was interrupted"
                self._conn.execute(
                    "UPDATE runs SET status = 'interrupted', error_type = 'Interrupted', "
                    "error_message = 'the process recording this run ended without finishing "
                    "it (killed or crashed)', nodes = ? WHERE id = ? AND status = 'running'",
                    (json.dumps(rows), run_id))


def _when_unlocked(step: Callable[[], None]) -> None:
    """Run ``step``, again while another process holds a lock SQLite will not wait for.

    SQLite answers "database is locked" at once, without its busy handler, when
    two connections switch a new file to WAL mode or create its schema at the
    same moment; the loser succeeds as soon as the winner is done.
    """
    deadline = time.monotonic() + BUSY_SECONDS
    pause = 0.001
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as e:
            contended = "locked" in str(e) or "busy" in str(e)
            if not contended or time.monotonic() > deadline:
                raise
        time.sleep(pause)  # no event to wait on: the lock is another process's
        pause = min(pause * 2, 0.05)


def _run_entry(row: tuple[Any, ...], path: str) -> RunEntry:
    (run_id, flow, targets, inputs, status, started, ended, executor, host, pid, _start,
     environment, error_type, error_message, nodes) = row
    return RunEntry(run_id, flow, tuple(json.loads(targets)), json.loads(inputs), status,
                    started, ended, executor, host, pid, json.loads(environment or "{}"),
                    error_type, error_message,
                    tuple(NodeEntry(*n) for n in json.loads(nodes)), path)


# --------------------------------------------------------------------------- the recorder


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
                                             [_pending_row(name) for name in run.nodes])
            path, seqs, rows = live
            started, touched, ended = per_store.setdefault(path, ([], set(), []))
            if isinstance(event, tuple):  # read now: the record's latest state
                seq = seqs.get(event[1])
                if seq is None:  # taken on mid-run (the ancestors of an entry that vanished)
                    seq = seqs[event[1]] = len(rows)
                    rows.append(_pending_row(event[1]))
                rows[seq] = _node_row(run.nodes[event[1]])
                touched.add(run.id)
            elif isinstance(event, RunStarted):
                started.append(run)
            else:
                touched.add(run.id)
                ended.append(_end_row(run))
        for path, (started, touched, ended) in per_store.items():
            # a run started in this batch is inserted with its rows as they are now
            new = {run.id for run in started}
            progress = [(run_id, json.dumps(self._live[run_id][2])) for run_id in touched
                        if run_id not in new]
            self.store(path).write([_run_row(run, self._live[run.id][2]) for run in started],
                                   progress, ended)
        for row in (r for _, (_, _, ended) in per_store.items() for r in ended):
            self._live.pop(row[-1], None)


_RECORDER: Recorder | None = None
# first runs may start on several threads at once (flow.submit): one recorder, subscribed once
_RECORDER_LOCK = threading.Lock()


def _recorder() -> Recorder:
    global _RECORDER
    if _RECORDER is None:
        with _RECORDER_LOCK:
            if _RECORDER is None:
                recorder = Recorder()
                atexit.register(recorder.flush)
                _RECORDER = recorder
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
        _recorder()  # subscribed before any thread's run can pass the flag test above
    _DECIDED = True


def flush() -> None:
    """Wait until every run event emitted so far in this process is in the history."""
    _recorder().flush()


def open_store(path: str) -> Store:
    """The :class:`Store` of a history file or of a cache directory holding one."""
    if path != MEMORY and os.path.isdir(path):
        path = os.path.join(path, FILENAME)
    return _recorder().store(path)


# --------------------------------------------------------------------------- where and what


def location(cache: Any) -> str | None:
    """Where the history of runs served by ``cache`` lives.

    ``<disk dir>/history.sqlite`` beside the disk tier; for a cache with no disk
    tier, an in-memory database (this process only). ``LAZYFLOW_HISTORY``
    overrides both with a file path, or ``off`` to record nothing.
    """
    forced = os.environ.get("LAZYFLOW_HISTORY")
    if forced:
        return None if forced.lower() in ("off", "0", "false", "no") else forced
    for tier in getattr(cache, "tiers", ()):
        if tier.name == "disk":
            directory = next((getattr(tier, a) for a in ("directory", "path", "root")
                              if isinstance(getattr(tier, a, None), (str, os.PathLike))), None)
            if directory is not None:
                return os.path.join(os.fspath(directory), FILENAME)
    return MEMORY


def history(flow: Flow | str | None = None, limit: int | None = 20, *,
            path: str | None = None) -> Runs:
    """The most recent runs, newest first, each with its nodes.

    >>> lf.history(flow, limit=5)                 # doctest: +SKIP
    >>> lf.history().to_frame()                   # doctest: +SKIP

    ``flow`` is a :class:`~lazyflow.Flow` (read beside its cache, its runs
    only), a flow name, or ``None`` for every flow. Without a flow object the
    histories this process has used are read, plus the one in the default
    cache directory (``LAZYFLOW_CACHE_DIR`` or ``./.lazyflow``); ``path`` names
    a history file or cache directory instead.
    """
    recorder = _recorder()
    recorder.flush()
    name = flow if isinstance(flow, str) or flow is None else flow.name
    if path is not None:
        stores = [open_store(path)]
    elif flow is not None and not isinstance(flow, str):
        where = location(flow.cache)
        stores = [recorder.store(where)] if where else []
    else:
        stores = [recorder.store(p) for p in _default_paths()]
    found = [r for s in stores for r in s.runs(flow=name, limit=limit)]
    found.sort(key=lambda r: (r.started, r.id), reverse=True)
    return Runs(found[:limit] if limit is not None else found)


def find(run_id: str, *, path: str | None = None) -> RunEntry:
    """The run whose id is ``run_id`` or starts with it, from the histories :func:`history` reads.

    Raises :class:`~lazyflow.errors.UnknownRunError` (a ``KeyError``) when no run or
    more than one run matches.
    """
    from lazyflow.errors import UnknownRunError

    _recorder().flush()
    paths = [path] if path is not None else _default_paths()
    found = {r.id: r for p in paths for r in open_store(p).runs(run_id=run_id, limit=None)}
    if len(found) == 1:
        return next(iter(found.values()))
    where = ", ".join(paths) or "no history file"
    if not found:
        raise UnknownRunError(f"no recorded run has id {run_id!r} (searched {where}); "
                              "list runs with `lazyflow runs` or lf.history()")
    raise UnknownRunError(f"run id {run_id!r} is ambiguous: it starts "
                          f"{', '.join(sorted(found))}; give more characters")


def _default_paths() -> list[str]:
    paths = _recorder().known_paths()
    default = os.path.join(default_cache_dir(), FILENAME)
    if os.path.exists(default) and default not in paths:
        paths.append(default)
    forced = location(None)
    if forced and forced != MEMORY and forced not in paths:
        paths.append(forced)
    return paths


def default_cache_dir() -> str:
    """Where the default disk tier lives (``LAZYFLOW_CACHE_DIR``, project file, ``./.lazyflow``)."""
    import lazyflow.cache.config as config

    return config.resolve(memory=None, remote=None).disk or os.path.abspath(config.DEFAULT_DISK)


_ENVIRONMENT: dict[str, Any] = {}
_PACKAGE = re.compile(r"^([A-Za-z_][\w.]*)==([^\s=]+)$")


def environment(code: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """Python, platform, lazyflow, and ``package: version`` for packages the code uses."""
    if not _ENVIRONMENT:
        _ENVIRONMENT.update(python=platform.python_version(), platform=platform.platform(),
                            implementation=sys.implementation.name, lazyflow=__version__)
    packages: dict[str, str] = {}
    for components in code.values():
        packages.update(_packages(components))
    return {**_ENVIRONMENT, "packages": dict(sorted(packages.items()))}


_PACKAGES_SEEN: dict[int, tuple[Mapping[str, str], dict[str, str]]] = {}


def _packages(components: Mapping[str, str]) -> dict[str, str]:
    """Packages named in one fingerprint's components (memoised: fingerprints are reused)."""
    seen = _PACKAGES_SEEN.get(id(components))
    if seen is not None and seen[0] is components:
        return seen[1]
    found: dict[str, str] = {}
    for token in components.values():
        match = _PACKAGE.match(token) if "==" in token else None
        if match and not match.group(2).startswith("py"):
            found[match.group(1).partition(".")[0]] = match.group(2)
    if len(_PACKAGES_SEEN) > 4096:
        _PACKAGES_SEEN.clear()
    _PACKAGES_SEEN[id(components)] = (components, found)
    return found


def _run_row(run: Run, nodes: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    host, pid, start = _this_process()
    return (run.id, run.flow, json.dumps(list(run.targets)), json.dumps(run.inputs), "running",
            run.started, None, run.executor, host, pid, start,
            json.dumps(environment(run.code)), None, None, json.dumps(nodes))


_PROCESS: dict[int, tuple[str, int, str | None]] = {}


def _this_process() -> tuple[str, int, str | None]:
    """(host, pid, start time) of this process, read once: /proc reads take the mmap lock."""
    pid = os.getpid()
    found = _PROCESS.get(pid)
    if found is None:
        found = _PROCESS[pid] = (socket.gethostname(), pid, _process_start(pid))
    return found


def _end_row(run: Run) -> tuple[Any, ...]:
    error = run.error
    return (run.status, run.ended, None if error is None else type(error).__name__,
            None if error is None else str(error), run.id)


def _node_row(r: NodeRecord) -> tuple[Any, ...]:
    # a tuple of plain values: the cyclic GC stops tracking it (a list it would walk)
    error = r.error
    return (r.name, r.status, r.tier, r.key, r.digest, r.duration, r.size, r.saved, r.started,
            r.ended, r.reason, None if error is None else type(error).__name__,
            None if error is None else str(error))


def _pending_row(name: str) -> tuple[Any, ...]:
    return (name, "pending", None, None, None, 0.0, None, 0.0, None, None, "", None, None)


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    if fields and fields[0] in ("Z", "X"):  # a zombie has finished running
        return "dead"
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int | None, start: str | None) -> bool:
    if pid is None:
        return True  # cannot tell: leave it running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _process_start(pid)
    return now != "dead" and (start is None or now is None or now == start)


def _timestamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _warn_damaged(path: str, moved: str, error: sqlite3.DatabaseError) -> None:
    import warnings

    from lazyflow.errors import CacheWarning

    warnings.warn(f"the run history {path} is damaged ({error}); it was moved to {moved} "
                  "and a fresh history is started, so earlier runs are not listed. Rows may "
                  f"be recoverable with `sqlite3 {moved} .recover`; delete it once you no "
                  "longer need it", CacheWarning, stacklevel=2)


def _warn(message: str) -> None:
    import warnings

    from lazyflow.errors import LazyflowWarning

    warnings.warn(message, LazyflowWarning, stacklevel=2)

