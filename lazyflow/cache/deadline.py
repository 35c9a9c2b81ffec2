"""Deadlines around remote calls: a call that does not answer in time is abandoned.

Design note
-----------
Policy. fsspec backends spell timeouts differently, and none bounds a whole
call: s3fs retries on top of botocore's connect and read timeouts, which
against an endpoint that accepts connections and never answers adds up to
more than 25 minutes, and a hung network mount has no timeout at all. So
lazyflow keeps its own deadline around every call: the call runs on a worker
thread and the caller waits at most the deadline. Past it, the call is
abandoned where it stands (a thread cannot be stopped; whatever it returns
later is dropped) and the :class:`Deadline` *trips*: calls waiting are woken
and every later call fails at once with :class:`TierOfflineError`, until
:meth:`Deadline.reset`. A call that moves a value's bytes gets one more
second per MiB (:data:`SLOWEST_RATE`), so a large upload on a slow link is
not taken for a hung one; a call over the whole tree (listing, clearing
every object) pages through it and gets :data:`WHOLE_TREE` deadlines.

State. Worker threads are daemons shared by every deadline, reused when
idle, so an abandoned call never holds up interpreter exit. Rejected:
``ThreadPoolExecutor``, which joins its threads at exit and so would hang
the process behind a call that never returns. ``_tripped`` is a future that
resolves to the :class:`Outage`: waiting on it together with the call wakes
every waiter as soon as one call trips.
"""

from __future__ import annotations

import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from lazyflow.cache.base import TierOfflineError

__all__ = ["DEFAULT_SECONDS", "SLOWEST_RATE", "WHOLE_TREE", "Deadline", "Outage"]

T = TypeVar("T")

DEFAULT_SECONDS = 10.0
"""How long a remote operation may go unanswered when no deadline is configured."""

SLOWEST_RATE = 2**20
"""Bytes per second a value transfer is allowed on top of the deadline (1 MiB/s)."""

WHOLE_TREE = 6
"""Deadlines a call over every object under the root may take (it pages through them)."""


@dataclass(frozen=True, slots=True)
class Outage:
    """Which operation of which remote passed which deadline."""

    where: str
    operation: str
    seconds: float

    def __str__(self) -> str:
        shown = f"{self.seconds:.0f}" if self.seconds >= 100 else f"{self.seconds:.3g}"
        return f"{self.where} did not answer ({self.operation}) within {shown} s"


class Deadline:
    """Runs calls on worker threads, each waited for at most its deadline.

    >>> deadline = Deadline(5.0, "memory://doc")
    >>> deadline.call("add", lambda: 1 + 1)
    2
    """

    def __init__(self, seconds: float, where: str) -> None:
        self.seconds = seconds
        self.where = where
        self._lock = threading.Lock()
        self._tripped: Future[Outage] = Future()

    @property
    def outage(self) -> Outage | None:
        """The operation that passed its deadline, or ``None`` while the remote answers."""
        return self._tripped.result() if self._tripped.done() else None

    def call(self, operation: str, fn: Callable[[], T], *, nbytes: int = 0,
             whole_tree: bool = False) -> T:
        """``fn()``, or :class:`TierOfflineError` when it (or any call before it) is late.

        ``nbytes`` is the size of a value the call moves; ``whole_tree`` marks
        a call over every object. Exceptions of ``fn`` propagate unchanged.
        """
        self.check()
        seconds = self.seconds * (WHOLE_TREE if whole_tree else 1) + nbytes / SLOWEST_RATE
        # in the caller's context: what it set for its calls holds for them (the traffic
        # a run was charged already, remote_traffic.py)
        future = _WORKERS.submit(functools.partial(contextvars.copy_context().run, fn))
        tripped = self._tripped
        either: tuple[Future[Any], ...] = (future, tripped)
        done, _ = wait(either, timeout=seconds, return_when=FIRST_COMPLETED)
        if future in done:
            return future.result()
        with self._lock:
            if not tripped.done():  # the first call to pass its deadline names the outage
                tripped.set_result(Outage(self.where, operation, seconds))
        raise _offline(tripped.result())

    def check(self) -> None:
        """Raise :class:`TierOfflineError` if a call has passed its deadline."""
        outage = self.outage
        if outage is not None:
            raise _offline(outage)

    def reset(self) -> None:
        """Forget the outage: the next call contacts the remote again."""
        with self._lock:
            if self._tripped.done():
                self._tripped = Future()


def _offline(outage: Outage) -> TierOfflineError:
    return TierOfflineError(f"the remote cache {outage}; it is offline for the rest of this run")


class _Workers:
    """Daemon threads that run calls; a thread stuck in an abandoned call is left to it."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = \
            queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        self._jobs.put((fn, future))
        if start:  # every busy thread may be stuck: never wait for one
            threading.Thread(target=self._work, name="lazyflow-remote-call", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            _run(*self._jobs.get())
            with self._lock:
                self._idle += 1


def _run(fn: Callable[[], Any], future: Future[Any]) -> None:
    """Settle ``future`` with ``fn()``; a function, so nothing of an abandoned call outlives it."""
    try:
        result = fn()
    except BaseException as e:  # handed to the caller waiting on the future, if still waiting
        future.set_exception(e)
    else:
        future.set_result(result)


_WORKERS = _Workers()
