"""The process executor: nodes run in worker processes that can really be stopped.

Design note
-----------
Policy. A small pool of our own: ``max_workers`` *slots*, each one worker
process plus one thread in this process that feeds it tasks from a shared
queue and reads its outcomes (``wire.py``: cloudpickle, protocol 5, large
buffers out of band). A task past its timeout, or running when a run is
cancelled or interrupted, is stopped by killing its worker; the slot starts a
fresh one for its next task. Rejected: ``concurrent.futures.ProcessPoolExecutor``,
which cannot cancel a running task and breaks the whole pool when one worker
dies; loky, a dependency for the same forty lines.

Workers are fresh interpreters (``python -c`` with a socket pair), not
``multiprocessing`` children: ``fork`` would copy whatever threads and locks
this process holds (the engine's, a kernel's, a remote tier's uploader) into
a child that can deadlock on them, and ``spawn``/``forkserver`` re-run the
user's ``__main__`` script in every worker, which a function shipped by value
never needs (and which runs an unguarded script's top level again). A worker
starts in about 0.2 s (interpreter plus ``import lazyflow``; see
benchmarks/README.md), paid once per session per slot. Workers ignore
SIGINT: a kernel interrupt reaches the whole process group, and the engine,
not each worker, decides what stops (it kills the running ones).

Code. A worker imports a module once, from its file, and keeps it for the session; this
process may have changed it since (a module edited and reloaded here, a global set at run
time, ``cfg.N = 5``). Each task carries the code its key was taken from, and the worker
refuses to call other code (``codecheck.py``): the task then goes to a fresh worker, which
imports the modules as their files are now, and when that one disagrees too the node fails
with :class:`~lazyflow.executors.codecheck.WorkerCodeError` naming the parts that differ.
Rejected: reloading modules in the worker (state set at run time is in no file), and
sending modules by value (their state may hold what cannot be pickled).

State. ``"processes"`` by name leases a pool kept for the session (one per
``max_workers``), so repeated runs in a notebook pay the start-up once; each
run's lease stops only its own tasks when the run ends. Hashers registered
with ``lf.register_hasher`` are sent to a worker before its first task and
whenever they change, so a worker hashes results exactly as this process
would; when they cannot be pickled, results are hashed here instead.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import queue
import socket
import subprocess
import sys
import threading
import traceback
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

import lazyflow.executors.wire as wire
from lazyflow.errors import LazyflowError
from lazyflow.executors.base import Outcome, Task, install_hashers, pack_hashers
from lazyflow.executors.codecheck import WorkerCodeError
from lazyflow.executors.profile import dedicate_process
from lazyflow.keys.hashing import registered_hashers

__all__ = ["ProcessExecutor", "WorkerLostError", "leased", "serve", "shared_pool"]


class WorkerLostError(LazyflowError, RuntimeError):
    """A worker process died while running a node (killed, out of memory, a crash)."""

    def __init__(self, node: str, exitcode: int | None) -> None:
        self.node = node
        self.exitcode = exitcode
        how = f"exit code {exitcode}" if exitcode is not None else "its pipe closed"
        super().__init__(
            f"the worker process running node {node!r} died ({how}); the node may have run "
            "out of memory or crashed the interpreter: run it with executor='sync' to see why, "
            "or give it retries=")


class ProcessExecutor:
    """Run tasks in ``max_workers`` worker processes (default: the number of CPUs).

    >>> with ProcessExecutor(2) as pool:                      # doctest: +SKIP
    ...     flow.run("report", executor=pool)
    """

    name = "processes"

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._queue: queue.SimpleQueue[tuple[Task, Future[Outcome]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: dict[Future[Outcome], _Slot] = {}
        self._slots = [_Slot(self, index) for index in range(self.max_workers)]
        self._closed = False

    def submit(self, task: Task) -> Future[Outcome]:
        """Queue ``task`` for the next free worker."""
        if self._closed:
            raise RuntimeError("this process executor was shut down; make a new one")
        future: Future[Outcome] = Future()
        self._queue.put((task, future))
        return future

    def abandon(self, future: Future[Outcome]) -> bool:
        """Stop the task: drop it if queued, kill its worker if running. True once stopped."""
        with self._lock:  # the feeding thread claims a task under the same lock
            slot = self._running.get(future)
            if slot is None:
                return future.cancel() or future.done()
        slot.kill(future)  # returns once the worker is dead and reaped
        return True

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [pid for slot in self._slots if (pid := slot.pid) is not None]

    def shutdown(self) -> None:
        """Stop every worker; queued tasks are cancelled, running ones killed."""
        self._closed = True
        while True:  # queued tasks first, so the sentinels below are what the slots see next
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        for _ in self._slots:
            self._queue.put(None)
        with self._lock:
            running = list(self._running.items())
        for future, slot in running:
            slot.kill(future)
        for slot in self._slots:
            slot.stop()

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class _Slot:
    """One worker process and the thread that feeds it, one task at a time."""

    def __init__(self, pool: ProcessExecutor, index: int) -> None:
        self.pool = pool
        self.process: Any = None
        self.conn: Connection | None = None
        self.hashers: tuple[tuple[type, Any], ...] | None = None  # as last sent to the worker
        self.hash_here = True
        self._thread = threading.Thread(target=self._feed, name=f"lazyflow-process-{index}",
                                        daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int | None:
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    def _feed(self) -> None:
        pool = self.pool
        while (item := pool._queue.get()) is not None:
            task, future = item
            with pool._lock:
                if future.cancelled():
                    continue
                pool._running[future] = self
            try:
                outcome, error = self._call(task, future), None
            except BaseException as e:  # a dead worker, or a task that cannot be pickled
                outcome, error = None, e
            lost = isinstance(error, (EOFError, OSError))
            exitcode = self._reap() if lost else None
            with pool._lock:
                pool._running.pop(future, None)
                if future.done():  # abandoned: kill() or cancel() resolved it first
                    continue
                if outcome is not None:
                    future.set_result(outcome)
                elif lost:
                    future.set_exception(WorkerLostError(task.node, exitcode))
                else:
                    future.set_exception(error)

    def _call(self, task: Task, future: Future[Outcome]) -> Outcome | None:
        outcome = self._exchange(task, future, first=True)
        if outcome is not None and isinstance(outcome.error, WorkerCodeError):
            # the worker imported a module before it was edited (and reloaded) here: a fresh
            # one imports the files as they are now (codecheck.py)
            self.stop()
            self._reap()
            outcome = self._exchange(task, future, first=False)
            if outcome is not None and isinstance(outcome.error, WorkerCodeError):
                outcome.error = outcome.error.in_fresh_worker()
        return outcome

    def _exchange(self, task: Task, future: Future[Outcome], *, first: bool
                  ) -> Outcome | None:
        """Send ``task`` to the worker (started if need be) and read its outcome; ``first``:
        the future is marked running once the worker has it."""
        conn = self._ensure_worker()
        current = tuple(registered_hashers().items())
        if current != self.hashers:
            blob = pack_hashers(current)
            self.hash_here = blob is None
            if blob is not None:
                wire.send(conn, ("hashers", blob))
            self.hashers = current
        if self.hash_here:
            task = replace(task, hash_result=False)
        try:
            wire.send(conn, ("task", task))  # pickles fully before writing a byte
        except (EOFError, OSError):
            raise
        except Exception as e:
            raise TypeError(f"node {task.node!r} cannot be sent to a worker process: {e}; "
                            "use executor='threads' for nodes that take or close over "
                            "unpicklable objects (locks, open files, connections)") from e
        unpickled = conn.recv_bytes()  # empty: the worker has the task and calls it now
        if unpickled:  # it could not rebuild the task: a name that resolves only here
            raise TypeError(
                f"node {task.node!r} cannot be rebuilt in a worker process "
                f"({unpickled.decode(errors='replace')}): something it reads travels by name "
                "and the worker has no such name (a functools.lru_cache helper defined in a "
                "notebook, say); define it in a module the workers can import, or use "
                "executor='threads'")
        with self.pool._lock:  # running, and timed by the engine, from here on
            started = not future.done() and (not first or future.set_running_or_notify_cancel())
        if not started:  # cancelled while it was being sent: stop the work
            self.stop()
            return None
        try:
            return wire.receive(conn)  # type: ignore[no-any-return]
        except (EOFError, OSError):
            raise
        except Exception as e:  # read whole, but it does not unpickle here
            raise TypeError(f"what the worker process sent back for node {task.node!r} (its "
                            "value, or the exception it raised) cannot be rebuilt in this "
                            f"process ({type(e).__name__}: {e}); run it with "
                            "executor='threads' to get it as it is") from e

    def _ensure_worker(self) -> Connection:
        if self.process is not None and self.process.poll() is None and self.conn is not None:
            return self.conn
        self._reap()
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(theirs.fileno()), json.dumps(sys.path)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        # the child holds the only other end now: its death reads as EOF here
        self.conn, self.hashers = Connection(ours.detach()), None
        return self.conn

    def _reap(self) -> int | None:
        process, conn = self.process, self.conn
        self.process = self.conn = None
        if conn is not None:
            conn.close()
        return None if process is None else process.wait()

    def kill(self, future: Future[Outcome]) -> None:
        """Resolve ``future`` as cancelled, then kill the worker running it."""
        with self.pool._lock:
            if not future.done():  # first, so the feeding thread sees an abandoned task
                future.set_exception(FutureCancelled("stopped: its worker process was killed"))
        process = self.process
        if process is not None:
            process.kill()
            process.wait()  # reaped: its pid is gone when abandon() returns

    def stop(self) -> None:
        """Kill the worker (idle or not) and release the pipe."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


_BOOTSTRAP = ("import json, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
              "sys.path[:] = json.loads(sys.argv[2]); "
              "from lazyflow.executors.processes import serve; serve(int(sys.argv[1]))")


def serve(fd: int) -> None:
    """A worker's main loop on socket ``fd``: receive a task, run it, send its outcome back."""
    conn = Connection(fd)
    dedicate_process()  # one call at a time here: peak memory is measured exactly
    while True:
        try:
            kind, message = wire.receive(conn)
        except EOFError:
            return
        except Exception as e:  # read whole, but a name in it does not resolve here
            conn.send_bytes(f"{type(e).__name__}: {e}".encode())
            continue
        if kind == "hashers":
            install_hashers(message)
            continue
        conn.send_bytes(b"")  # started
        outcome = message()
        if outcome.error is not None:
            _note_traceback(outcome.error)
            outcome.error = _sendable(outcome.error)
        try:
            wire.send(conn, outcome)
        except Exception as e:  # the value or the error cannot be pickled
            wire.send(conn, Outcome(
                error=TypeError(f"node {message.node!r} returned a value that cannot be sent "
                                f"back from a worker process: {e}; use executor='threads'"),
                attempts=outcome.attempts, started=outcome.started, ended=outcome.ended,
                duration=outcome.duration))


def _sendable(error: BaseException) -> Any:
    """``error``, or a stand-in that unpickles as an exception of its type with its
    arguments and attributes when ``error`` itself does not: an exception pickles as its
    class called with its ``args``, which fails for one whose ``__init__`` takes other
    arguments (``MyError(a, b)`` passing ``f"{a}/{b}"`` up), and the node would fail with
    that ``TypeError`` instead of its own error."""
    try:
        pickle.loads(cloudpickle.dumps(error))
    except Exception:
        return _Rebuilt(error)
    return error


class _Rebuilt:
    """Pickles as the exception it holds, rebuilt without calling its ``__init__``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        error = self.error
        return _rebuild, (type(error), error.args, dict(getattr(error, "__dict__", {})))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
             ) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


def _note_traceback(error: BaseException) -> None:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if hasattr(error, "add_note"):
        error.add_note(f"traceback in worker process {os.getpid()}:\n{text}")


# --------------------------------------------------------------------------- shared pools

_SHARED: dict[int, ProcessExecutor] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(max_workers: int | None = None) -> ProcessExecutor:
    """The session's pool for ``max_workers`` (made on first use, shut at exit)."""
    workers = max_workers or os.cpu_count() or 1
    with _SHARED_LOCK:
        pool = _SHARED.get(workers)
        if pool is None or pool._closed:
            pool = _SHARED[workers] = ProcessExecutor(workers)
        return pool


class _Lease:
    """One run's use of a shared pool: shutting it stops only this run's tasks."""

    name = "processes"

    def __init__(self, pool: ProcessExecutor) -> None:
        self.pool = pool
        self.max_workers = pool.max_workers
        self._mine: set[Future[Outcome]] = set()

    def submit(self, task: Task) -> Future[Outcome]:
        future = self.pool.submit(task)
        self._mine.add(future)
        future.add_done_callback(self._mine.discard)
        return future

    def abandon(self, future: Future[Outcome]) -> bool:
        return self.pool.abandon(future)

    def shutdown(self) -> None:
        for future in list(self._mine):
            self.pool.abandon(future)


def leased(max_workers: int | None = None) -> _Lease:
    """The factory behind ``executor="processes"``: a lease on the shared pool."""
    return _Lease(shared_pool(max_workers))


@atexit.register
def _shutdown_shared() -> None:
    for pool in list(_SHARED.values()):
        pool.shutdown()
