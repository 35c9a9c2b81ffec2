"""Rendezvous between a test and its nodes that work in threads, worker processes and on
cluster workers alike: file locks and named pipes, never sleeps.

Kept apart from the test modules so a worker that unpickles a node calling them imports
only this small module.
"""

from __future__ import annotations

import fcntl
import os
import time


class Gate:
    """A gate that nodes wait at, in any thread or process, until the test opens it.

    Closed, the test holds an exclusive lock on a file; :func:`wait_at` takes a
    shared lock on the same file, so it returns once the gate is opened (at once
    if it already is). Used as a context manager, the gate opens on the way out,
    so a failing test never leaves a node waiting.
    """

    def __init__(self, path: os.PathLike[str] | str) -> None:
        self.path = str(path)
        self._holder = open(self.path, "w")  # noqa: SIM115 - held until open() closes it
        fcntl.flock(self._holder, fcntl.LOCK_EX)

    def open(self) -> None:
        """Let every waiting and future :func:`wait_at` through."""
        if not self._holder.closed:
            self._holder.close()  # closing the file releases its lock

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()


def wait_at(path: str) -> None:
    """Block until the :class:`Gate` at ``path`` is open (call it from inside a node)."""
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_SH)


def announce(fifo: str) -> None:
    """Tell the test reading the named pipe ``fifo`` that this node runs, and in which
    process (its id); returns once the test has opened the pipe."""
    with open(fifo, "w") as f:
        f.write(str(os.getpid()))


def until(condition, what: str, seconds: float = 60.0) -> None:
    """Poll ``condition`` until it holds (a deadline, never a sleep as synchronisation).

    Here, not in a test module: pytest rewrites a test module's asserts, and a worker
    process that imports the module to run a node calling this would hold other code
    than the test's process, which a worker refuses to run (``codecheck.py``)."""
    deadline = time.time() + seconds
    while not condition():
        if time.time() >= deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
