"""Write-behind batches: the disk tier's writes, buffered and committed together.

Design note
-----------
Policy. An SQLite commit costs far more than a row: ~30-50 µs against ~3 µs
for an insert inside an open transaction (measured here), and a computed node
writes its value, its trace record and its latest record (one row since disk
layout 3: the records are restated by the value's row, :meth:`Batch.attach`).
So the disk tier does not commit each write: a :class:`Batch` buffers rows by key and
commits everything buffered in one transaction

* when a row is added and the batch's first row is ``delay`` (50 ms) old: the
  thread that keeps writing commits on its own (no thread switch per batch),
  the batch as it was; the new row opens the next one, so that the records
  attached to it right after (:meth:`Batch.attach`) land with it;
* on the writer thread, ``delay`` plus a little after the first row, when
  nothing was added since (a long node is running) or when :meth:`Batch.commit`
  asks (the engine does before it waits on a running node, so a crash during a
  long node loses no finished result; it returns at once);
* on :meth:`Batch.flush`, which waits until it landed (the end of every run;
  before listing keys, deleting, measuring, closing; at interpreter exit).

State. ``pending``: the rows written since the last commit began, by key (a
later write of a key replaces the earlier one). ``writing``: the rows of the
commit in progress. A read looks in ``pending``, then ``writing``, then the
database, and a row leaves ``writing`` only once it is committed, so a process
always reads its own writes. Commits are serialised (``commit_lock``): batches
land in the order they were written.

Crash. A batch is one transaction: a process killed before its COMMIT loses
that batch and nothing else, and no other process ever sees part of one.

Failure. A batch that cannot be written (disk full, permissions) is dropped:
its entries are recomputed when next needed. The writer thread cannot raise to
anyone, so the failure is kept and reported by the next ``flush`` or write
(:meth:`Batch.failed`), in the caller's thread.

Fork. A child process starts with empty buffers (the parent commits its own
rows) and fresh locks (the parent's writer thread may hold one at the fork, and
it does not exist in the child).

Rejected: committing every batch on the writer thread (it competes with the
writing thread for the GIL at every SQLite call, which made each of the
engine's lookups ~3x slower during a run, and gained nothing on two busy
cores); committing on the engine's thread at every wait (a thread pool of
short nodes waits once per node: back to a commit per node, on the critical
path); a writer thread kept for the life of the process (tests and notebooks
open many caches: an idle writer ends after a second).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["DELAY", "Batch"]

DELAY = 0.05
"""Seconds a buffered row waits at most before the writer commits it."""
_GRACE = 0.01
"""Seconds the writer thread waits past ``delay`` before it commits a batch itself: a
thread that goes on writing commits its own batch first, when it adds a row."""
_IDLE = 1.0
"""Seconds a writer thread with nothing to write waits for more before it ends."""

Row = TypeVar("Row")


class Batch(Generic[Row]):
    """Rows by key, committed together by ``write`` on a writer thread.

    ``write(rows)`` commits a batch in one transaction; ``release()`` runs on
    the writer thread when it ends (to close its database connection).

    >>> landed = []
    >>> batch = Batch(landed.append, release=lambda: None)
    >>> batch.add("k", b"row")
    >>> batch.get("k")
    b'row'
    >>> batch.flush()
    >>> landed
    [{'k': b'row'}]
    """

    def __init__(self, write: Callable[[dict[str, Row]], None], *,
                 release: Callable[[], None], delay: float | None = None) -> None:
        self.write = write
        self.release = release
        self.delay = DELAY if delay is None else delay
        self._start()
        _LIVE.add(self)

    def _start(self) -> None:
        """Empty buffers, fresh locks, no writer (also a forked child's state)."""
        self.pending: dict[str, Row] = {}
        self.writing: dict[str, Row] = {}
        self.wake = threading.Condition(threading.Lock())  # guards pending and the writer
        self.commit_lock = threading.Lock()  # one commit at a time, in order
        self.writer: threading.Thread | None = None
        self.opened = 0.0  # when the first row of the pending batch came in
        self.urgent = False  # commit() asked for a commit now
        self.failure: tuple[int, Exception] | None = None

    def add(self, key: str, row: Row) -> None:
        """Buffer ``row`` under ``key``; it is committed within ``delay`` seconds."""
        while True:
            now = time.monotonic()
            with self.wake:
                pending = self.pending
                if not pending or now - self.opened < self.delay:
                    if not pending:
                        self.opened = now
                        if self.writer is None:
                            self.writer = threading.Thread(target=self._run, daemon=True,
                                                           name="lazyflow-disk-writer")
                            self.writer.start()
                        else:
                            self.wake.notify()  # a writer waiting idle starts its clock
                    pending[key] = row
                    return
            # due: the batch as it was, then ``row`` opens the next, so that what is
            # attached to it right after (the records its entry restates) lands with it
            self._commit()

    def attach(self, key: str, owner: str, link: Callable[[Row, Row | None], Row | None]
               ) -> bool:
        """Buffer under ``key`` what ``link(row, previous)`` makes of the row buffered under
        ``owner`` (and of ``key``'s own, if any), when ``owner``'s is still pending and
        ``link`` gives something; ``False`` otherwise. ``link`` runs under the batch's
        lock: ``owner``'s row cannot be taken for committing meanwhile."""
        with self.wake:
            pending = self.pending
            row = pending.get(owner)
            if row is None:
                return False
            linked = link(row, pending.get(key))
            if linked is None:
                return False
            pending[key] = linked
            return True

    def get(self, key: str) -> Row | None:
        """The row buffered under ``key`` and not yet committed, if any."""
        # No lock: the writer sets ``writing`` before it empties ``pending`` and empties
        # ``writing`` only after the COMMIT, so reading pending, writing, then the
        # database never misses a row (each attribute read and dict lookup is atomic).
        if self.pending:
            row = self.pending.get(key)
            if row is not None:
                return row
        if self.writing:
            return self.writing.get(key)
        return None

    def commit(self) -> None:
        """Have the writer commit what is buffered now; returns at once."""
        if self.pending:
            with self.wake:
                self.urgent = True
                self.wake.notify()

    def flush(self) -> None:
        """Commit what is buffered and wait until it (and a commit in progress) landed."""
        self._commit()

    def drop(self) -> None:
        """Forget what is buffered (``clear``), once a commit in progress has landed."""
        with self.wake:
            self.pending = {}
        with self.commit_lock:
            pass

    def failed(self) -> tuple[int, Exception] | None:
        """How many rows the last failed commit dropped and why, once; else ``None``."""
        failure, self.failure = self.failure, None
        return failure

    def _commit(self) -> None:
        with self.commit_lock:
            with self.wake:
                if not self.pending:
                    return
                self.writing, self.pending = self.pending, {}  # ``writing`` first: see get
                self.urgent = False
            try:
                self.write(self.writing)
            except Exception as e:  # the writer thread has no caller: report it later
                self.failure = (len(self.writing), e)
            finally:
                self.writing = {}

    def _run(self) -> None:
        try:
            while self._due():
                self._commit()
        finally:
            self.release()

    def _due(self) -> bool:
        """Wait until the pending batch is due; ``False`` when idle for a while (the
        writer then ends; the next ``add`` starts another)."""
        with self.wake:
            while not self.pending:
                if not self.wake.wait(_IDLE) and not self.pending:
                    self.writer = None
                    return False
            while self.pending and not self.urgent:
                left = self.opened + self.delay + _GRACE - time.monotonic()
                if left <= 0:
                    break
                self.wake.wait(left)
            return True


_LIVE: weakref.WeakSet[Batch[Any]] = weakref.WeakSet()


def _flush_all() -> None:
    """At interpreter exit: commit every batch still buffered (writers are daemons)."""
    for batch in list(_LIVE):
        with contextlib.suppress(Exception):  # nobody is left to tell
            batch.flush()


def _forget_all() -> None:
    """In a forked child: the parent commits its rows; the child starts afresh."""
    for batch in list(_LIVE):
        batch._start()


atexit.register(_flush_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)
