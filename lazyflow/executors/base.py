"""What executors run (``Task``), what they return (``Outcome``), and their protocol.

Design note
-----------
An executor only *calls*: it receives a picklable :class:`Task` (the node's
function, its keyword arguments and its retry policy) and returns a future
of an :class:`Outcome`. Retrying, timing and hashing the result happen inside
the task, on the worker, so results are hashed in parallel and a remote
worker returns a digest alongside the value. Deciding hits, storing entries
and recording happen in the engine, identically for every executor (the
synchronous executor is the reference path, as dask's ``get_sync``).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import cloudpickle

# hash_value hashes functions and classes with the code hasher fingerprint.py registers
# when imported (hashing.py sits below it); a worker process imports only this side of
# lazyflow, so this import is what lets it hash results in parallel as the design says
import lazyflow.keys.fingerprint  # noqa: F401
from lazyflow.cache.flights import calling_keys
from lazyflow.errors import HashingError
from lazyflow.executors.codecheck import ExpectedCode, refusal
from lazyflow.executors.profile import Measure
from lazyflow.keys.hashing import hash_value, register_hasher
from lazyflow.model.lazy import Traced
from lazyflow.model.metrics import collected, start_collecting
from lazyflow.model.policies import DEFAULTS, Policy
from lazyflow.model.skip import Skip, returned_skip

__all__ = ["Capabilities", "Executor", "GraphExecutor", "Outcome", "Task", "after_failure",
           "install_hashers", "pack_hashers", "refused_outcome", "run_to_completion"]


@dataclass(slots=True)
class Outcome:
    """The result of running a task: a value and its digest, or the final error."""

    value: Any = None
    digest: str | None = None
    error: BaseException | None = None
    attempts: int = 0
    started: float = 0.0
    ended: float = 0.0
    duration: float = 0.0
    stored: bool = False
    """True when the worker wrote the value to the shared cache tier and sent back none."""
    metrics: dict[str, float] | None = None
    """What the call reported with ``lf.report`` (every attempt's), or ``None``."""
    cpu: float | None = None
    """CPU seconds of the thread that ran the call (``profile.py``)."""
    peak_memory: int | None = None
    """Peak bytes during the call, where measured (``profile.py``)."""
    whole: tuple[float, dict[str, float] | None] | None = None
    """What the whole value cost, seconds and figures, when it holds more than this call
    computed (a map's recalled elements); ``None``: the call's own."""
    created: float | None = None
    """When the oldest part of the value was computed, when earlier than this call (a map's
    recalled elements): what its entry records as ``created``, for ``max_age=``;
    ``None``: when the call ended."""


@dataclass(slots=True)
class Task:
    """One node call with its retry policy; calling it returns an :class:`Outcome`."""

    node: str
    func: Callable[..., Any]
    kwargs: dict[str, Any]
    policy: Policy = field(default=DEFAULTS)
    hash_result: bool = True
    """False where this process cannot hash like the engine (see ``processes.py``)."""
    key: str | None = None
    """The content key being computed (``flights.calling_keys``), when the engine claimed one."""
    expected_code: ExpectedCode | None = None
    """The code the key was taken from, for a worker to check before calling
    (``codecheck.py``); ``None`` in the process that keyed it."""

    def __call__(self) -> Outcome:
        __tracebackhide__ = True  # IPython hides this frame from a node's traceback
        if self.expected_code is not None:
            refused = refused_outcome(self)
            if refused is not None:
                return refused
        outcome = Outcome(started=time.time())
        t0 = time.perf_counter()
        collecting = start_collecting()
        measure = Measure(self.policy.profile_memory)
        try:
            while True:
                outcome.attempts += 1
                try:
                    outcome.value, outcome.error = self._call(), None
                    break
                except (KeyboardInterrupt, SystemExit):
                    raise  # an interrupt cancels the run; it is not the node's failure
                except BaseException as e:
                    delay = after_failure(outcome, self.policy, e)
                    if delay is None:
                        break
                    time.sleep(delay)
        finally:
            outcome.metrics = collected(collecting)
            outcome.cpu, outcome.peak_memory = measure.stop()
        return self.finished(outcome, t0)

    async def acall(self) -> Outcome:
        """The coroutine twin of calling the task: each attempt's value is awaited when it
        is awaitable, and backoff waits with ``asyncio.sleep`` (the async lane, ``lane.py``)."""
        __tracebackhide__ = True  # IPython hides this frame from a node's traceback
        outcome = Outcome(started=time.time())
        t0 = time.perf_counter()
        collecting = start_collecting()
        try:
            while True:
                outcome.attempts += 1
                try:
                    value = self.func(**self.kwargs)
                    outcome.value = await value if inspect.isawaitable(value) else value
                    outcome.error = None
                    break
                except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
                    raise
                except BaseException as e:
                    delay = after_failure(outcome, self.policy, e)
                    if delay is None:
                        break
                    await asyncio.sleep(delay)
        finally:
            outcome.metrics = collected(collecting)
        return self.finished(outcome, t0)

    def _call(self) -> Any:
        """One attempt: call the function (an ``async def`` one runs to completion on this
        thread's own event loop, as in a worker process or a Dask worker)."""
        __tracebackhide__ = True  # IPython hides this frame from a node's traceback
        if self.key is None:
            value = self.func(**self.kwargs)
        else:
            calling = calling_keys()  # flights.py: a request inside for this key
            calling.append(self.key)  # computes instead of waiting for itself
            try:
                value = self.func(**self.kwargs)
            finally:
                calling.pop()
        return run_to_completion(value) if inspect.iscoroutine(value) else value

    def finished(self, outcome: Outcome, t0: float) -> Outcome:
        """Time and (when it can) hash a finished call's outcome."""
        outcome.duration = time.perf_counter() - t0
        outcome.ended = time.time()
        if outcome.error is None:
            value = outcome.value.value if isinstance(outcome.value, Traced) else outcome.value
            refused = returned_skip(self.node, value)
            if refused is not None:  # never stored, here or by a worker
                outcome.value, outcome.error = None, refused
        if outcome.error is None and self.hash_result:
            try:
                outcome.digest = hash_value(outcome.value)
            except HashingError:
                outcome.digest = None  # the engine decides: error, or a volatile digest
        return outcome


def after_failure(outcome: Outcome, policy: Policy, error: BaseException) -> float | None:
    """Record a failed attempt; the seconds to wait before retrying, or ``None`` to stop.

    A :class:`Skip` is a decision, never retried; other errors are retried while
    ``policy`` allows, with exponential backoff and full jitter.
    """
    outcome.error = error
    if isinstance(error, Skip) or not isinstance(error, policy.retry_on) \
            or outcome.attempts > policy.retries:
        return None
    return random.uniform(0, policy.retry_delay * 2 ** (outcome.attempts - 1))


def run_to_completion(coroutine: Any) -> Any:
    """Run an ``async def`` node's coroutine to its end on an event loop of this worker
    thread's own (a worker process or a Dask worker thread runs no loop of its own)."""
    return asyncio.run(coroutine)


@runtime_checkable
class Executor(Protocol):
    """Runs tasks; ``max_workers`` bounds how many the engine keeps in flight.

    An executor may also declare, as class attributes, what it can do (read
    through :class:`Capabilities`, each false when not declared): ``inline``,
    ``places_work``, ``shares_cache``, ``in_process`` and ``submits_graphs``.
    """

    name: str
    max_workers: int

    def submit(self, task: Task) -> Future[Outcome]:
        """Start ``task``; the future resolves to its :class:`Outcome`."""
        ...

    def abandon(self, future: Future[Outcome]) -> bool:
        """Stop a running task if the executor can (return True), else leave it running."""
        ...

    def shutdown(self) -> None:
        """Release workers the executor created itself."""
        ...



def refused_outcome(task: Task) -> Outcome | None:
    """On a worker: the failed outcome of ``task`` when the code it holds for the node is
    not the code its key was taken from (``codecheck.py``); else ``None``."""
    error = refusal(task.node, task.expected_code)
    if error is None:
        return None
    now = time.time()
    return Outcome(error=error, attempts=1, started=now, ended=now)

@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an executor declares it can do; the engine reads this, never the executor's name."""

    inline: bool = False
    """It calls each task in the submitting thread: the engine calls tasks directly (no
    future), and runs a node with a ``timeout=`` on a helper thread it can abandon."""
    places_work: bool = False
    """It places work itself (Dask): resource needs go to it, and no local gate applies."""
    shares_cache: bool = False
    """Its workers can open a shared cache tier themselves (``engine/shared.py``)."""
    in_process: bool = False
    """It calls tasks in this process: ``async def`` nodes go to the async lane
    (``lane.py``) instead, where they wait concurrently."""
    submits_graphs: bool = False
    """It takes tasks that follow other tasks (:class:`GraphExecutor`): the engine hands it
    a node with the needed nodes downstream of it at once (``engine/graphs.py``), and the
    scheduler runs them with no round trip to the engine between them."""

    @property
    def elsewhere(self) -> bool:
        """Its tasks may run in another process, whose modules may hold other code than
        this one's: each carries the code its key was taken from (``codecheck.py``)."""
        return not (self.inline or self.in_process)

    @classmethod
    def of(cls, executor: Executor) -> Capabilities:
        """The capabilities ``executor`` declares."""
        return cls(bool(getattr(executor, "inline", False)),
                   bool(getattr(executor, "places_work", False)),
                   bool(getattr(executor, "shares_cache", False)),
                   bool(getattr(executor, "in_process", False)),
                   bool(getattr(executor, "submits_graphs", False)))


@runtime_checkable
class GraphExecutor(Executor, Protocol):
    """An executor that declares ``submits_graphs``: tasks may follow other tasks."""

    def submit_graph(self, tasks: Sequence[Task],
                     after: Sequence[Sequence[int | Future[Outcome]]]) -> list[Future[Outcome]]:
        """Start ``tasks`` as one graph; a future of each task's :class:`Outcome`, in order.

        Task ``i`` is called, where it runs, with the outcomes of ``after[i]`` as
        positional arguments, in order: each is the index of an earlier task of
        ``tasks`` or a future this executor returned. The executor may hold the
        graph back until :meth:`flush`.
        """
        ...

    def flush(self) -> None:
        """Send every graph held back; the engine calls it before it waits."""
        ...


def pack_hashers(hashers: tuple[tuple[type, Callable[[Any], Any]], ...]) -> bytes | None:
    """The registered hashers as bytes for a worker, or ``None`` if they cannot be pickled.

    A worker that installs them hashes results exactly as this process does;
    otherwise the engine hashes results itself (``Task.hash_result=False``).
    """
    try:
        blob: bytes = cloudpickle.dumps([(cls, cls.__qualname__, fn) for cls, fn in hashers])
        return blob
    except Exception:
        return None


def install_hashers(blob: bytes) -> None:
    """Register, in a worker, the hashers packed by :func:`pack_hashers`."""
    for cls, qualname, fn in cloudpickle.loads(blob):
        cls.__qualname__ = qualname  # cloudpickle rebuilds local classes without it
        register_hasher(cls, fn)
