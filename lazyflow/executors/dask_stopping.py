"""Stopping a task on a Dask cluster when the engine abandons it (``DaskExecutor.abandon``,
``dask.py``): a task past its ``timeout=``, or running when the run is cancelled.

A running Python thread cannot be interrupted, so a task is stopped for real by
restarting the worker that runs it through its nanny (Dask reschedules that worker's
other tasks); without nannies it cannot be stopped from here and keeps running.
Rejected: ``future.cancel()`` alone, which releases the result but leaves the work
running.

A task sent on its own is cancelled, then its worker restarted; one that finished
before the engine heard of it keeps its result. A task of a graph is stopped with
every graph still running, since tasks of later graphs follow it and the engine stops
one only when the run stops: the tasks that finished are fetched first (they stay
cached), the collectors are dropped so the scheduler forgets the others, and the
workers running them restart. Each restart waits until the scheduler has dropped the
cancelled tasks, or it would hand them to another worker and a cancelled node would
run again.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError as FutureCancelled
from typing import Any

from lazyflow.executors.dask_batches import Batch

__all__ = ["Stopping"]


class Stopping:
    """How the Dask executor stops the tasks ``abandon`` gives up on, over its client and
    its batches (a base of ``DaskExecutor``, whose methods fetch what a stopped batch had
    finished)."""

    client: Any
    _lock: threading.Lock
    _pending: dict[Batch, None]

    def _unpack(self, batch: Batch) -> None:
        """Resolve the tasks of a batch whose collector did not give them (the executor's)."""
        raise NotImplementedError

    def _salvage(self, batches: list[Batch], error: BaseException) -> dict[str, str]:
        """Fetch what ``batches`` finished, fail the rest; the workers running the rest
        (the executor's)."""
        raise NotImplementedError

    def _abandon_single(self, batch: Batch) -> bool:
        """Stop a task sent on its own (``submit``)."""
        future = batch.members[0][1]
        remote = batch.remote
        if remote is None:  # fetched meanwhile
            return True
        state, worker = self.client.run_on_scheduler(_state_on, key=remote.key)
        if state == "memory":  # it finished before the engine heard of it: keep it
            self._unpack(batch)
            return True
        with self._lock:
            self._pending.pop(batch, None)
        remote.cancel()
        batch.remote = None  # released: restarting a worker must not compute it again
        stopped = True
        if worker is not None:
            stopped = self._restart([remote.key], [worker])
        if not future.done():
            future.set_exception(FutureCancelled("stopped on the Dask cluster"))
        return stopped

    def _abandon_graphs(self) -> bool:
        """Stop every graph still running: fetch the tasks that finished (they stay
        cached), drop the collectors so the scheduler forgets the others, and restart
        the workers running them."""
        with self._lock:
            graphs = [b for b in self._pending if b.graph and b.remote is not None]
            for batch in graphs:
                del self._pending[batch]
        if not graphs:
            return True
        running = self._salvage(graphs, FutureCancelled("stopped on the Dask cluster"))
        if not running:
            return True
        return self._restart(list(running), sorted(set(running.values())))

    def _restart(self, keys: list[str], workers: list[str]) -> bool:
        """Restart ``workers`` once the scheduler has dropped ``keys``; False without
        nannies (the work cannot be stopped from here)."""
        for key in keys:
            _await_release(self.client, key)
        try:
            self.client.restart_workers(workers, raise_for_error=True)
        except Exception:
            return False
        return True


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
