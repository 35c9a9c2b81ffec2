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
engine is still starting nodes. Each graph is a scheduler generation of its
own (``fifo_timeout=0``): its tasks, and its collectors, run before those of
graphs sent after it, so batches come back as they are done rather than all
at the end of the run.

Batches (``dask_batches.py``). The client wants no task of a graph itself:
each graph sent (up to 64 tasks, a :class:`~lazyflow.executors.dask_batches.Batch`)
is followed by one more task, its collector, which returns their outcomes
together, and only collectors are wanted and fetched.
A wanted key costs the scheduler, in the client's process with a
``LocalCluster``, a report, a release and its share of a gather: profiled on a
501-node fan-in tree, wanting every task (as ``client.compute`` of all 501
``dask.delayed`` nodes does) took 0.55 s of the process's CPU a run, against
0.33 s for ``dask.delayed`` wanting the root only. Each collector costs the
workers a task and a transfer, so there are few: collectors of 16 tasks saved
the client what they cost the workers, collectors of 64 saved a tenth of the
CPU of a run, client and workers together. A collector is on no chain's path;
a task of a later graph that follows one of an earlier graph takes its outcome
from that batch's collector (by index), or by value once fetched. A collector
is kept until its result is fetched, then dropped, so the cluster holds no
result the engine has and a worker restart never computes it again.
Collectors are fetched in one gather for every one that landed meanwhile, at
most every 50 ms while others are still to land. A batch whose collector has
waited over a second (``_SWEEP``) on the rest of it has the tasks of it that
finished claimed on the scheduler and fetched one by one, so a batch of long
tasks reports each as it ends, within a second; a batch of short ones comes
back whole. When a collector fails (a worker died too often), the tasks of its
batch the scheduler still holds are fetched one by one, so only the tasks that
failed fail.
Trade-off, without a shared tier: the values of a graph's nodes all pass
through its collector's worker (half of them sent there from the other
workers) and come back as one message, so that worker holds up to 64 values at
once, where fetching each task's result held none there; with a shared tier
outcomes carry no values.

Travel (``dask_travel.py``). A task of a graph is pickled once, on the client:
Dask would unpickle it on the scheduler and pickle it again for its worker,
twice with a function defined in ``__main__``, all in the client's process
with a ``LocalCluster`` (0.1 ms a task). Each returns its outcome pickled on
its worker: Dask sends bytes to a collector or a task that follows without
serializing outcomes item by item, and a value that cannot be pickled is its
node's error there (Dask, failing to send it, would try again and again).
Both are pickled as Dask pickles its own tasks and results: by the standard
pickler unless a name would not resolve on the other side (``__main__``, a
lambda), then by cloudpickle, whose Python callbacks for every object took a
third of a task's time on a busy worker (0.14 -> 0.10 ms a task).
Rejected: ``client.submit`` per node as nodes become ready (a round trip to
the client between two nodes of a chain: 0.3x of ``dask.delayed``); Dask's
own ``tokenize`` of each graph (it hashed every task, function and input to
name the graph: 0.2-0.4 ms a task): each Dask task is named by its key, and
each graph here.

Failures. A node's own exception never fails the Dask task: the task returns
an :class:`Outcome` carrying it, so lazyflow's ``retries=`` (inside the task)
are the only retries of user errors and Dask's ``retries=`` stays unused. A
*worker* that dies mid-task is Dask's business: the scheduler reschedules the
task on another worker (up to ``distributed.scheduler.allowed-failures``) and
the run goes on. Stopping (``dask_stopping.py``): a task past its
``timeout=`` (or running when the run is cancelled) is stopped for real by
restarting the worker that runs it through its nanny, since a running Python
thread cannot be interrupted; Dask reschedules that worker's other tasks. A
task of a graph is stopped with every graph still running (tasks of later
graphs follow it, and the engine stops one only when the run stops): the tasks
that finished are fetched first (they stay cached), the collectors are dropped
so the scheduler forgets the others, and the workers running them restart.
Rejected: ``future.cancel()`` alone, which releases the result but leaves the
work running.

Workers (``dask_workers.py``). A node's ``resources=`` become Dask worker
resources, refused up front when no worker declares one; hashers registered
here are installed on every worker, or results are hashed on the client.
"""

from __future__ import annotations

import contextlib
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
from lazyflow.executors.base import Outcome, Task
from lazyflow.executors.dask_batches import Batch, Remote, resolve
from lazyflow.executors.dask_stopping import Stopping
from lazyflow.executors.dask_travel import Pick, Shipped, arguments_of, takes, together, unpacked
from lazyflow.executors.dask_workers import Workers

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
_COLLECT = 64  # tasks whose outcomes come back together, as one collector's result
_SWEEP = 1.0
"""Seconds a batch's collector may wait on the rest of its batch before the tasks of it
that finished are fetched one by one (a batch of long tasks reports each as it ends)."""


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


class DaskExecutor(Stopping):
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
        self._pending: dict[Batch, None] = {}  # sent, result not fetched yet (in send order)
        self._held: list[tuple[str, Task, list[Any], Remote]] = []
        self._held_keys: dict[Future[Outcome], str] = {}
        self._lock = threading.Lock()
        self._workers = Workers(client)
        self._prefix = uuid.uuid4().hex
        self._count = itertools.count()
        self._fetched = 0.0  # when results were last fetched (time.monotonic)
        self._sweeper: threading.Timer | None = None
        self._closed = False

    def submit(self, task: Task) -> Future[Outcome]:
        """Send ``task`` to the cluster; the returned future resolves to its outcome."""
        if not self._workers.hash_like_the_client():
            task = replace(task, hash_result=False)
        resources = self._workers.resources(task)
        key = self._key(task)
        remote = self.client.submit(task, key=key, pure=False,
                                    resources=resources or None,
                                    priority=task.policy.priority)  # priority= (higher first)
        future = Remote()
        future.set_running_or_notify_cancel()  # Dask queues it; timed from submission
        self._track(Batch([(key, future)], graph=False), remote)
        return future

    def submit_graph(self, tasks: Sequence[Task],
                     after: Sequence[Sequence[int | Future[Outcome]]]) -> list[Future[Outcome]]:
        """Hold ``tasks`` for the next :meth:`flush`; each is called, on its worker, with
        the outcomes of the tasks it follows (Dask resolves them there)."""
        hash_on_workers = self._workers.hash_like_the_client()
        names: list[str] = []
        futures: list[Future[Outcome]] = []
        with self._lock:
            for task, follows in zip(tasks, after, strict=True):
                if not hash_on_workers:
                    task = replace(task, hash_result=False)
                key = self._key(task)
                refs = [_TaskRef(names[f]) if isinstance(f, int) else self._ref(f)
                        for f in follows]
                future = Remote()
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
        """Send the tasks held since the last flush to the scheduler as one graph, with a
        collector after each batch of them."""
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return
        graph = {key: _dask_task(key, Shipped(task, takes(refs)), arguments_of(refs))
                 for key, task, refs, _ in held}
        batches = [Batch([(key, future) for key, _, _, future in held[i:i + _COLLECT]])
                   for i in range(0, len(held), _COLLECT)]
        wanted = []
        for batch in batches:
            if batch.single:  # its own result: a collector would add a task for nothing
                wanted.append(batch.members[0][0])
                continue
            collector = f"lazyflow-collect-{self._prefix}-{next(self._count)}"
            graph[collector] = _dask_task(collector, together,
                                          [_TaskRef(key) for key, _ in batch.members])
            wanted.append(collector)
        # fifo_timeout=0: each graph comes after those sent before it (see _graph)
        remotes = self.client.get(self._graph(graph), wanted, sync=False, fifo_timeout=0)
        for batch, remote in zip(batches, remotes, strict=True):
            self._track(batch, remote)
        with self._lock:
            for _, _, _, future in held:
                self._held_keys.pop(future, None)

    def abandon(self, future: Future[Outcome]) -> bool:
        """Cancel the task; if a worker is running it, restart that worker to stop it. A
        task that has finished on the cluster keeps its result (the engine settles it).
        A task of a graph is stopped with every graph still running: tasks of later
        graphs follow it, and the engine abandons one only when the run stops."""
        with self._lock:
            key = self._held_keys.pop(future, None)
            if key is not None:  # not sent yet: drop it
                self._held = [h for h in self._held if h[0] != key]
        batch = getattr(future, "batch", None)
        if future.done():
            return True
        if batch is None:
            future.set_exception(FutureCancelled("cancelled before it was sent"))
            return True
        if not batch.graph:
            return self._abandon_single(batch)
        return self._abandon_graphs()

    def shutdown(self) -> None:
        """Cancel this run's unfinished tasks; the client stays open (it is not ours)."""
        with self._lock:
            remaining, self._pending = list(self._pending), {}
            self._held, self._held_keys = [], {}
            self._closed, sweeper = True, self._sweeper
        if sweeper is not None:
            sweeper.cancel()
        single = [b.remote for b in remaining if not b.graph and b.remote is not None]
        for batch in remaining:
            if batch.graph:  # dropped, not cancelled: Dask cancels only wanted tasks
                batch.drop()
        if single:
            self.client.cancel(single)

    # ----------------------------------------------------------------- internals

    def _key(self, task: Task) -> str:
        # Dask groups tasks by the key's leading words: one group per node, as on its
        # dashboard; one group for all would make a wide graph's nodes "root-ish", which
        # the scheduler queues and hands out one by one as workers free up
        return f"{task.node}-{self._prefix}-{next(self._count)}"

    def _graph(self, tasks: dict[str, Any]) -> Any:
        """``tasks`` as the graph Dask takes, named here: Dask would name it by hashing
        its tasks (2 ms a run of 501 tasks, on the engine's thread).

        Sent with ``fifo_timeout=0``, each graph is a generation of its own on the
        scheduler, after those sent before it. With ``client.get``'s default (60 s) every
        graph of a run shared one, and each graph's tasks are numbered from 0 by
        ``dask.order``: the scheduler ran the first tasks of every graph before the last
        of any, and a collector, last in its graph, ran after all of them. On a 501-node
        fan-in tree the first collector landed at 69% of the run, and the engine settled
        all 501 nodes at the end, on the scheduler's process; now each batch comes back as
        it is done (the first at 39%).
        """
        from dask._expr import LLGExpr

        name = f"lazyflow-{self._prefix}-{next(self._count)}"
        return LLGExpr(tasks, _determ_token=name)  # type: ignore[no-untyped-call]

    def _ref(self, future: Future[Outcome]) -> Any:
        """What a task of a graph takes for a task it follows: its key while it is held
        for the same flush; its batch's collector (and its place there) once sent; its
        outcome once fetched here (the collector is dropped then, so the cluster keeps
        no result the engine has)."""
        key = self._held_keys.get(future)
        if key is not None:
            return _TaskRef(key)
        batch: Batch | None = getattr(future, "batch", None)
        remote = None if batch is None else batch.remote
        if batch is not None and remote is not None and not future.done():
            # a distributed.Future stands for its task, and keeps it until the graph is sent
            return remote if batch.single else Pick(remote, getattr(future, "index", 0))
        try:
            return future.result(timeout=0)
        except BaseException as e:  # lost: the step that follows it does not run
            return Outcome(error=e)

    def _track(self, batch: Batch, remote: Any) -> None:
        batch.remote = remote  # keeps the results on the cluster for tasks that follow
        for index, (_, future) in enumerate(batch.members):
            future.batch, future.index = batch, index
        with self._lock:
            self._pending[batch] = None
        remote.add_done_callback(functools.partial(self._landed, batch))
        if not batch.single:
            self._arm()

    def _landed(self, batch: Batch, done: Any) -> None:
        """A batch's collector finished on the cluster (on Dask's callback thread)."""
        if batch.remote is None:
            return
        if done.status != "finished":
            self._unpack(batch)
            return
        wait = self._fetched + _FETCH_EVERY - time.monotonic()
        if wait > 0 and len(self._pending) > 1:  # others will land: fetch them together
            time.sleep(wait)  # on Dask's callback thread; the engine's keeps going
        self._fetched = time.monotonic()
        self._fetch()

    def _fetch(self) -> None:
        """Fetch every finished collector not fetched yet in one gather: one round trip for
        the batches that landed meanwhile, rather than one per batch."""
        with self._lock:
            ready = [b for b in self._pending if b.remote is not None
                     and b.remote.status == "finished"]
            for batch in ready:
                del self._pending[batch]
        if not ready:
            return
        try:
            results = self.client.gather([b.remote for b in ready])
        except BaseException:  # one of them was lost meanwhile: each on its own
            for batch in ready:
                self._unpack(batch)
            return
        for batch, result in zip(ready, results, strict=True):
            batch.settle(batch.outcomes(result))

    def _unpack(self, batch: Batch) -> None:
        """Resolve the tasks of a batch whose collector did not give their outcomes: the
        ones the scheduler still holds are fetched one by one, the others failed with it."""
        with self._lock:
            self._pending.pop(batch, None)
        remote = batch.remote
        if remote is None:
            return
        try:
            if remote.status == "finished":
                result = remote.result()
                batch.settle(batch.outcomes(result))
                return
            error: BaseException = remote.exception() if remote.status == "error" \
                else FutureCancelled("cancelled on the Dask cluster")
        except BaseException as e:  # lost meanwhile, or a value that could not be sent
            error = e
        if batch.single:
            batch.fail(error)
            return
        self._fetch_each(batch, error)

    def _fetch_each(self, batch: Batch, error: BaseException) -> None:
        """Resolve each task of ``batch`` with its own outcome where the scheduler holds one
        (finished, or failed on its own); the others fail with ``error``."""
        self._salvage([batch], error)

    def _salvage(self, batches: list[Batch], error: BaseException) -> dict[str, str]:
        """Fetch the outcomes the scheduler holds for the unresolved tasks of ``batches``,
        fail the others with ``error`` and drop the batches; return the workers running
        tasks of them, by key."""
        running = self._claim(batches, erred=True)
        for batch in batches:
            for _, future in batch.members:
                resolve(future, error=error)
            batch.drop()
        return running

    def _claim(self, batches: list[Batch], *, erred: bool) -> dict[str, str]:
        """Resolve each unresolved task of ``batches`` that finished on the cluster (and,
        if ``erred``, that failed there) with its outcome, fetched on its own; return the
        workers running others, by key."""
        from distributed import Future as DaskFuture

        waiting = [(key, future) for batch in batches for key, future in batch.members
                   if not future.done()]
        if not waiting:
            return {}
        # the client's futures exist before the scheduler reports on them (it reports once)
        claims: dict[str, Any] = {key: DaskFuture(key, self.client) for key, _ in waiting}
        held, running = self.client.run_on_scheduler(_claimed, keys=list(claims),
                                                     client=self.client.id, erred=erred)
        fetched = self.client.gather([claims[k] for k in held], errors="skip") if held else []
        values = iter(fetched)
        for key, future in waiting:
            claim = claims[key]
            if key in held and claim.status == "finished":
                resolve(future, unpacked(next(values)))
            elif key in held:  # failed on its own on the cluster (its worker died too often)
                resolve(future, error=claim.exception())
            claim.release()
        return dict(running)

    def _arm(self) -> None:
        """Have :meth:`_sweep` run in ``_SWEEP`` seconds, unless it is due already."""
        with self._lock:
            if self._sweeper is not None or self._closed:
                return
            sweeper = self._sweeper = threading.Timer(_SWEEP, self._sweep)
        sweeper.daemon = True
        sweeper.start()

    def _sweep(self) -> None:
        """Fetch the finished tasks of batches whose collector has waited on others for
        ``_SWEEP`` seconds: a batch of long tasks reports each one as it finishes, give
        or take that (on a timer thread)."""
        with self._lock:
            self._sweeper = None
            due = time.monotonic() - _SWEEP
            batches = [b for b in self._pending if not b.single and b.remote is not None]
        late = [b for b in batches if b.sent <= due]
        if late:  # if this fails (the client is closing, say), their collectors bring them
            with contextlib.suppress(Exception):
                self._claim(late, erred=False)
        if batches:
            self._arm()


def _dask_task(key: str, func: Any, arguments: list[Any]) -> Any:
    """Dask's task ``key``, calling ``func`` with ``arguments``."""
    from dask._task_spec import Task as DaskTask

    return DaskTask(key, func, *arguments)


def _claimed(dask_scheduler: Any, keys: list[str], client: str,
             erred: bool) -> tuple[list[str], dict[str, str]]:
    """Of ``keys``, those the scheduler holds an outcome of (finished, or if ``erred``
    failed), now wanted by ``client`` so they stay until fetched; and the workers running
    others."""
    held, running = [], {}
    for key in keys:
        task = dask_scheduler.tasks.get(key)
        if task is None:
            continue
        if task.state == "memory" or (erred and task.state == "erred"):
            held.append(key)
        elif task.processing_on is not None:
            running[key] = task.processing_on.address
    if held:
        dask_scheduler.client_desires_keys(keys=held, client=client)
    return held, running


def _TaskRef(key: str) -> Any:  # noqa: N802  # stands for dask's class
    """A reference to the task named ``key`` in the same graph."""
    from dask._task_spec import TaskRef

    return TaskRef(key)
