"""The Dask executor: each node runs as one task on a ``distributed`` cluster.

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

import os
import threading
import time
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

    def __init__(self, client: Any, max_workers: int | None = None) -> None:
        self.client = client
        # the scheduler queues and places tasks itself: keep it fed rather than one per thread
        self.max_workers = max_workers or _IN_FLIGHT
        self._tasks: dict[Future[Outcome], Any] = {}
        self._lock = threading.Lock()
        self._hashers: tuple[tuple[type, Any], ...] | None = None
        self._hash_on_workers = False
        self._declared: set[str] | None = None

    def submit(self, task: Task) -> Future[Outcome]:
        """Send ``task`` to the cluster; the returned future resolves to its outcome."""
        self._sync_hashers()
        if not self._hash_on_workers:
            task = replace(task, hash_result=False)
        resources = self._resources(task)
        remote = self.client.submit(task, key=f"lazyflow-{task.node}-{id(task):x}", pure=False,
                                    resources=resources or None)
        future: Future[Outcome] = Future()
        future.set_running_or_notify_cancel()  # Dask queues it; timed from submission
        with self._lock:
            self._tasks[future] = remote
        remote.add_done_callback(lambda done: self._resolve(future, done))
        return future

    def abandon(self, future: Future[Outcome]) -> bool:
        """Cancel the task; if a worker is running it, restart that worker to stop it."""
        with self._lock:
            remote = self._tasks.pop(future, None)
        if remote is None:
            return future.done()
        worker = self.client.run_on_scheduler(_processing_on, key=remote.key)
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
        if remaining:
            self.client.cancel(remaining)

    # ----------------------------------------------------------------- internals

    def _resolve(self, future: Future[Outcome], done: Any) -> None:
        with self._lock:
            self._tasks.pop(future, None)
        if future.done():
            return
        try:
            if done.status == "finished":
                future.set_result(done.result())
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


def _processing_on(dask_scheduler: Any, key: str) -> str | None:
    state = dask_scheduler.tasks.get(key)
    worker = getattr(state, "processing_on", None)
    return None if worker is None else worker.address


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
