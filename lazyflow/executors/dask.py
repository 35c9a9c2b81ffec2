"""The Dask executor: each node runs as one task on a ``distributed`` cluster, sent as graphs.

Design note
-----------
Policy. ``executor=client`` (a ``distributed.Client``) or ``executor="dask"``
(the client of the environment: one connected to the scheduler
``LAZYFLOW_DASK_SCHEDULER`` names, which the CLI's ``--scheduler`` sets, else
``distributed.get_client()``). The engine
still plans, decides hits, stores and records; the cluster only runs
:class:`~lazyflow.executors.base.Task` objects, which retry and hash on the
worker like every other executor. This module imports ``distributed`` only
when a Dask executor is asked for.

Graphs (``submits_graphs``, ``engine/graphs.py``). ``submit_graph`` takes
tasks that follow other tasks: each becomes a Dask task whose arguments are
references to the tasks it follows, so Dask hands it their outcomes on its
worker and the scheduler runs a chain without asking the client. Graphs are
held until the engine's ``flush`` (once per pass of its loop) and sent as one
``update-graph``, or sooner every 64 tasks so the cluster starts while the
engine is still starting nodes. A task's Dask future is kept until its result
is fetched, then released (the engine has it; a task submitted later that
follows it takes the outcome itself), so the cluster holds no result twice
and a worker restart never computes it again. Results are fetched in one
gather for every task that landed meanwhile, at most every 50 ms while
others are still to land, not one round trip each.
Rejected: ``client.submit`` per node as nodes become ready (a round trip to
the client between two nodes of a chain: 0.3x of ``dask.delayed``); Dask's
own ``tokenize`` of each step (it hashed every function and input to name
the graph: 0.4 ms a task), which steps answer with their identity instead.

Failures. A node's own exception never fails the Dask task: the task returns
an :class:`Outcome` carrying it, so lazyflow's ``retries=`` (inside the task)
are the only retries of user errors and Dask's ``retries=`` stays unused. A
*worker* that dies mid-task is Dask's business: the scheduler reschedules the
task on another worker (up to ``distributed.scheduler.allowed-failures``) and
the run goes on. A task past its ``timeout=`` (or running when the run is
cancelled) is stopped for real by restarting the worker that runs it through
its nanny, since a running Python thread cannot be interrupted; Dask
reschedules that worker's other tasks. Rejected: ``future.cancel()`` alone,
which releases the result but leaves the work running.

Resources. A node's ``resources=`` become Dask worker resources (workers
declare theirs: ``dask worker --resources "gpus=1"``). ``cpus`` and
``memory`` that no worker declares are left to Dask's own thread and memory
limits; any other resource no worker declares is refused up front, since
Dask would hold the task forever. There is no local gate (``places_work``).

Hashers. Hashers registered with ``lf.register_hasher`` are installed on every
worker, present and future, as a worker plugin, and re-installed when they
change, so workers hash results exactly as the client would; if they cannot
be pickled, results are hashed on the client instead.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from lazyflow.errors import LazyflowError
from lazyflow.executors.base import Outcome, Task, install_hashers, pack_hashers
from lazyflow.keys.hashing import registered_hashers
from lazyflow.model.resources import ResourceError

__all__ = ["SCHEDULER_VARIABLE", "DaskExecutor", "DaskUnavailableError", "NoClientError",
           "client_from_environment"]

SCHEDULER_VARIABLE = "LAZYFLOW_DASK_SCHEDULER"
"""Names the scheduler ``executor="dask"`` connects to (the CLI's ``--scheduler`` sets it)."""
_IN_FLIGHT = 1000  # tasks handed to the scheduler at once unless max_workers= says otherwise
_FETCH_EVERY = 0.05
"""Seconds between two fetches while other tasks are still to land. A chain's results land
one at a time, and each gather costs the scheduler's event loop (in the client's process
with a LocalCluster) a round of messages: fetching them every 50 ms took the client
process's CPU on a 500-node chain from 1.7 s to 1.1-1.3 s (dask.delayed: 0.7 s)."""
_BATCH = 64  # tasks held before a graph is sent without waiting for the engine's flush
_LOCAL_ONLY = ("cpus", "memory")  # enforced by Dask itself when workers do not declare them


class DaskUnavailableError(LazyflowError, ImportError):
    """``executor="dask"`` was asked for but dask.distributed is not installed."""


class NoClientError(LazyflowError, ValueError):
    """``executor="dask"`` was asked for but no ``distributed.Client`` is running."""


def client_from_environment() -> Any:
    """The ``distributed.Client`` of ``executor="dask"``: one connected to the scheduler that
    ``LAZYFLOW_DASK_SCHEDULER`` names (``tcp://host:8786``; the running client when it is
    connected there), else the running client; with a hint when there is none."""
    try:
        import distributed
    except ImportError as e:
        raise DaskUnavailableError("executor='dask' needs dask.distributed: "
                                   "install lazyflow[dask]") from e
    address = os.environ.get(SCHEDULER_VARIABLE) or None
    try:
        return distributed.get_client() if address is None else distributed.get_client(address)
    except (OSError, ValueError) as e:
        if address is not None:  # a bad address, or nothing answers there
            raise NoClientError(f"executor='dask' could not reach the Dask scheduler at "
                                f"{address!r} ({SCHEDULER_VARIABLE}): {e}; start it "
                                "(dask scheduler) or correct the address") from e
        raise NoClientError("executor='dask' found no running distributed.Client: create one "
                            "first (client = distributed.Client() or Client('tcp://scheduler:"
                            f"8786')), set {SCHEDULER_VARIABLE}=tcp://scheduler:8786, or pass "
                            "executor=client") from e


class DaskExecutor:
    """Run tasks on the workers of a ``distributed.Client``.

    >>> from distributed import Client                     # doctest: +SKIP
    >>> flow.run("report", executor=Client("tcp://scheduler:8786"))  # doctest: +SKIP
    """

    name = "dask"
    places_work = True
    shares_cache = True  # with a remote tier, workers read inputs and write results there
    submits_graphs = True  # tasks follow tasks on the cluster (engine/graphs.py)

    def __init__(self, client: Any, max_workers: int | None = None) -> None:
        self.client = client
        # the scheduler queues and places tasks itself: keep it fed rather than one per thread
        self.max_workers = max_workers or _IN_FLIGHT
        self._tasks: dict[Future[Outcome], Any] = {}
        self._held: list[tuple[str, Task, list[Any], _Remote]] = []
        self._held_keys: dict[Future[Outcome], str] = {}
        self._lock = threading.Lock()
        self._hashers: tuple[tuple[type, Any], ...] | None = None
        self._hash_on_workers = False
        self._declared: set[str] | None = None
        self._prefix = uuid.uuid4().hex
        self._count = itertools.count()
        self._fetched = 0.0  # when results were last fetched (time.monotonic)

    def submit(self, task: Task) -> Future[Outcome]:
        """Send ``task`` to the cluster; the returned future resolves to its outcome."""
        self._sync_hashers()
        if not self._hash_on_workers:
            task = replace(task, hash_result=False)
        resources = self._resources(task)
        remote = self.client.submit(task, key=self._key(task), pure=False,
                                    resources=resources or None,
                                    priority=task.policy.priority)  # priority= (higher first)
        future = _Remote()
        future.set_running_or_notify_cancel()  # Dask queues it; timed from submission
        self._track(future, remote)
        return future

    def submit_graph(self, tasks: Sequence[Task],
                     after: Sequence[Sequence[int | Future[Outcome]]]) -> list[Future[Outcome]]:
        """Hold ``tasks`` for the next :meth:`flush`; each is called, on its worker, with
        the outcomes of the tasks it follows (Dask resolves them there)."""
        self._sync_hashers()
        names: list[str] = []
        futures: list[Future[Outcome]] = []
        with self._lock:
            for task, follows in zip(tasks, after, strict=True):
                if not self._hash_on_workers:
                    task = replace(task, hash_result=False)
                key = self._key(task)
                refs = [_TaskRef(names[f]) if isinstance(f, int) else self._ref(f)
                        for f in follows]
                future = _Remote()
                future.set_running_or_notify_cancel()
                self._held.append((key, task, refs, future))
                self._held_keys[future] = key
                names.append(key)
                futures.append(future)
            full = len(self._held) >= _BATCH
        if full:  # the cluster starts on these while the engine starts the next ones
            self.flush()
        return futures

    def flush(self) -> None:
        """Send the tasks held since the last flush to the scheduler as one graph."""
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return
        from dask._task_spec import Task as DaskTask

        graph = {key: DaskTask(key, task, *refs) for key, task, refs, _ in held}
        remotes = self.client.get(graph, [key for key, *_ in held], sync=False)
        for (_, _, _, future), remote in zip(held, remotes, strict=True):
            self._track(future, remote)
        with self._lock:
            for _, _, _, future in held:
                self._held_keys.pop(future, None)

    def abandon(self, future: Future[Outcome]) -> bool:
        """Cancel the task; if a worker is running it, restart that worker to stop it. A
        task that has finished on the cluster keeps its result (the engine settles it)."""
        with self._lock:
            self._tasks.pop(future, None)
            key = self._held_keys.pop(future, None)
            if key is not None:  # not sent yet: drop it
                self._held = [h for h in self._held if h[0] != key]
        remote = getattr(future, "remote", None)
        if future.done():
            return True
        if remote is None:
            future.set_exception(FutureCancelled("cancelled before it was sent"))
            return True
        state, worker = self.client.run_on_scheduler(_state_on, key=remote.key)
        if state == "memory":  # it finished before the engine heard of it: keep it
            try:
                result = remote.result()
                if not future.done():
                    future.set_result(result)
            except BaseException:  # lost meanwhile, or resolved by the fetching thread
                pass
            _release(future)  # released: restarting a worker must not compute it again
            return True
        remote.cancel()
        stopped = True
        if worker is not None:
            _await_release(self.client, remote.key)
            try:
                self.client.restart_workers([worker], raise_for_error=True)
            except Exception:  # no nanny: the work cannot be stopped from here
                stopped = False
        if not future.done():
            future.set_exception(FutureCancelled("stopped on the Dask cluster"))
        return stopped

    def shutdown(self) -> None:
        """Cancel this run's unfinished tasks; the client stays open (it is not ours)."""
        with self._lock:
            remaining, self._tasks = list(self._tasks.values()), {}
            self._held, self._held_keys = [], {}
        if remaining:
            self.client.cancel(remaining)

    # ----------------------------------------------------------------- internals

    def _key(self, task: Task) -> str:
        # Dask groups tasks by the key's leading words: one group per node, as on its
        # dashboard; one group for all would make a wide graph's nodes "root-ish", which
        # the scheduler queues and hands out one by one as workers free up
        return f"{task.node}-{self._prefix}-{next(self._count)}"

    def _ref(self, future: Future[Outcome]) -> Any:
        """What a task of a graph takes for a task it follows: its key while it is held
        for the same flush; its Dask future once sent; its outcome once fetched here (the
        Dask future is released then, so the cluster keeps no result the engine has)."""
        remote = getattr(future, "remote", None)
        if remote is not None:
            return remote  # a distributed.Future stands for its task
        key = self._held_keys.get(future)
        if key is not None:
            return _TaskRef(key)
        try:
            return future.result(timeout=0)
        except BaseException as e:  # lost: the step that follows it does not run
            return Outcome(error=e)

    def _track(self, future: _Remote, remote: Any) -> None:
        future.remote = remote  # keeps the result on the cluster for tasks that follow it
        with self._lock:
            self._tasks[future] = remote
        remote.add_done_callback(functools.partial(self._landed, future))

    def _landed(self, future: Future[Outcome], done: Any) -> None:
        """A task finished on the cluster (on Dask's callback thread)."""
        if future.done():
            return
        if done.status != "finished":
            self._resolve(future, done)
            return
        wait = self._fetched + _FETCH_EVERY - time.monotonic()
        if wait > 0 and len(self._tasks) > 1:  # others will land: fetch them together
            time.sleep(wait)  # on Dask's callback thread; the engine's keeps going
        self._fetched = time.monotonic()
        self._fetch()

    def _fetch(self) -> None:
        """Fetch every finished result not fetched yet in one gather: one round trip for
        the results that landed meanwhile, rather than one per task."""
        with self._lock:
            batch = [(f, r) for f, r in self._tasks.items()
                     if r.status == "finished" and not f.done()]
            for f, _ in batch:
                del self._tasks[f]
        if not batch:
            return
        try:
            results = self.client.gather([r for _, r in batch])
        except BaseException:  # one of them was lost meanwhile: each on its own
            for f, r in batch:
                self._resolve(f, r)
            return
        for (f, _), result in zip(batch, results, strict=True):
            if not f.done():
                f.set_result(result)
            _release(f)

    def _resolve(self, future: Future[Outcome], done: Any) -> None:
        with self._lock:
            self._tasks.pop(future, None)
        if future.done():
            return
        try:
            if done.status == "finished":
                future.set_result(done.result())
                _release(future)
            elif done.status == "cancelled":
                future.set_exception(FutureCancelled("cancelled on the Dask cluster"))
            else:  # lost too many workers (KilledWorker), or the task could not be sent
                future.set_exception(done.exception())
        except BaseException as e:
            if not future.done():
                future.set_exception(e)

    def _resources(self, task: Task) -> dict[str, float]:
        needs = task.policy.resources
        if not needs:
            return {}
        declared = self._declared_resources(refresh=False)
        if not set(needs) <= declared | set(_LOCAL_ONLY):
            declared = self._declared_resources(refresh=True)
        missing = sorted(set(needs) - declared - set(_LOCAL_ONLY))
        if missing:
            raise ResourceError(
                f"node {task.node!r} needs {', '.join(missing)}, which no Dask worker declares; "
                f"start workers with --resources \"{missing[0]}=1\" or drop it from resources=")
        return {name: amount for name, amount in needs.items() if name in declared}

    def _declared_resources(self, *, refresh: bool) -> set[str]:
        if self._declared is None or refresh:
            workers = self.client.scheduler_info().get("workers", {})
            self._declared = {r for info in workers.values() for r in info.get("resources", {})}
        return self._declared

    def _sync_hashers(self) -> None:
        current = tuple(registered_hashers().items())
        if current == self._hashers:
            return
        self._hashers = current
        blob = pack_hashers(current)
        if blob is not None:
            self.client.register_plugin(_hashers_plugin(blob), name="lazyflow-hashers")
        self._hash_on_workers = blob is not None


class _Remote(Future):  # type: ignore[type-arg]
    """A task's future, holding the Dask future of its task (``remote``) once sent."""

    remote: Any = None


def _release(future: Future[Outcome]) -> None:
    """Drop the Dask future of a task whose result the engine has: the cluster may forget
    it once no task that follows it needs it."""
    if isinstance(future, _Remote):
        future.remote = None


def _TaskRef(key: str) -> Any:  # noqa: N802  # stands for dask's class
    """A reference to the task named ``key`` in the same graph."""
    return _keyed_ref_class()(key)


@functools.cache
def _keyed_ref_class() -> type:
    """Dask's ``TaskRef``, tokenized by its key.

    The client names each graph by tokenizing its tasks, and a plain ``TaskRef`` has no
    ``__dask_tokenize__``, so Dask pickled and hashed every one: ~0.2 ms per edge, 40%
    of the client's CPU on a 501-node fan-in tree. Its ``__reduce__`` makes it travel as
    a plain ``TaskRef``.
    """
    from dask._task_spec import TaskRef

    class KeyedTaskRef(TaskRef):
        __slots__ = ()

        def __dask_tokenize__(self) -> tuple[str, Any]:
            return ("TaskRef", self.key)

    return KeyedTaskRef


def _state_on(dask_scheduler: Any, key: str) -> tuple[str | None, str | None]:
    """The scheduler's state of task ``key``, and the worker running it if one is."""
    task = dask_scheduler.tasks.get(key)
    worker = getattr(task, "processing_on", None)
    return getattr(task, "state", None), None if worker is None else worker.address


def _released(dask_scheduler: Any, key: str) -> bool:
    return key not in dask_scheduler.tasks


def _await_release(client: Any, key: str, patience: float = 10.0) -> None:
    """Return once the scheduler has dropped the cancelled ``key`` (or after ``patience``).

    The cancel travels on the client's batched stream, the worker restart that follows
    by RPC: a restart that overtakes it has the scheduler hand the still-wanted task to
    another worker, and a cancelled node runs again. Each check is a round trip to the
    scheduler, so this waits without sleeping.
    """
    deadline = time.monotonic() + patience
    while not client.run_on_scheduler(_released, key=key) and time.monotonic() < deadline:
        pass


def _hashers_plugin(blob: bytes) -> Any:
    """A worker plugin installing the client's hashers on every worker, present and future."""
    from distributed import WorkerPlugin

    class Hashers(WorkerPlugin):
        idempotent = False

        def setup(self, worker: Any) -> None:
            install_hashers(blob)

    return Hashers()
