"""``execute``: begin a run, loop until nothing is ready or running, end it.

The loop is dask's local scheduler's: start ready nodes while workers are
free (``start.py``), wait for running futures to land on one queue, settle
each (``settle.py``) and wake its consumers (``schedule.settled``). A
node's features (``hooks.py``) act inside those steps; the loop itself
knows only futures, deadlines and cancellation.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from queue import Empty
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
from lazyflow.engine.cancel import CancelToken
from lazyflow.engine.checks import settle_hit
from lazyflow.engine.events import GLOBAL, NodeFinished, RunFinished, RunStarted, Subscriber
from lazyflow.engine.flight import land_all
from lazyflow.engine.freshness import has_max_age
from lazyflow.engine.graphs import flush, stop_ahead
from lazyflow.engine.lease import end as end_leases
from lazyflow.engine.prepare import (
    Hit,
    Prepared,
    eager_edges,
    lazy_params,
    prepare,
    resolve,
    scope,
)
from lazyflow.engine.schedule import settled
from lazyflow.engine.settle import mark_unneeded, settle
from lazyflow.engine.shared import Sharing
from lazyflow.engine.start import start
from lazyflow.engine.state import RunState, make_ready, waiting
from lazyflow.engine.step import load
from lazyflow.engine.timeouts import executor_of, expire_deadlines, next_deadline
from lazyflow.engine.vanished import Vanished, demote, value_of
from lazyflow.errors import CancelledError
from lazyflow.executors import Capabilities, Executor, Outcome, resolve_executor
from lazyflow.model.options import DEFAULT as DEFAULT_NODE_OPTIONS
from lazyflow.model.policies import DEFAULTS, policy_for
from lazyflow.model.resources import Gate, Resources
from lazyflow.run import NodeRecord, Run

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.model.graph import Plan

__all__ = ["RunOptions", "execute"]

# Longest the main thread sleeps waiting for tasks. A SIGINT (Ctrl-C, a kernel interrupt)
# whose C handler ran on another thread, or on the main thread just before it went to
# sleep, does not wake it: its KeyboardInterrupt is raised only when the main thread next
# runs Python code (CPython), so it must never sleep unboundedly while a node runs.
_SIGNAL_POLL = 0.1


@dataclass
class RunOptions:
    """How to execute a request (everything ``flow.run`` takes besides targets and inputs)."""

    executor: Any = None
    max_workers: int | None = None
    cancel: CancelToken | None = None
    overrides: Mapping[str, Mapping[str, Any]] | None = None
    observers: Sequence[Subscriber] = ()
    resources: Resources | None = None
    cache: Cache | None = None
    """Answer from this cache instead of the flow's (``flow.verify`` passes a scratch one)."""
    publish: bool = True
    """False for a side run (``flow.verify``): its events go to ``observers`` only, not to
    the flow's or the global bus (so no history row, no widget), and ``flow.last_run``
    is left as it was."""


def execute(flow: Flow, plan: Plan, options: RunOptions | None = None) -> Run:
    """Answer ``plan`` with ``flow``'s cache; return the run.

    ``options.cancel`` is checked before each node starts and woken on while
    waiting; when set, the run stops with :class:`CancelledError`, running
    nodes are stopped where the executor can, and unstarted nodes are marked
    cancelled. Finished nodes stay cached in every case.
    """
    __tracebackhide__ = True  # IPython hides this frame from a node's traceback
    options = options or RunOptions()
    cache = flow.cache if options.cache is None else options.cache
    prepared = prepare(plan, scope(cache))
    stale: dict[str, str] | None = {} if has_max_age(plan) else None
    cold: set[str] = set()
    hits, needed, maybe = resolve(plan, prepared, cache, stale=stale, cold=cold)
    if cold:  # their latest records are read as they start (why.py): ask for them at once
        cache.expect(keys.latest_key(flow.name, n) for n in needed if n in cold)
    touched = hits.keys() | set(needed) | maybe
    records = {n: NodeRecord(n) for n in plan.order if n in touched}
    executor, owned = resolve_executor(options.executor, options.max_workers)
    run = Run(flow.name, plan.targets, records,
              inputs={p: d for n in plan.order for p, d in prepared[n].params.items()},
              code={n: prepared[n].fp.components for n in records}, cache=cache,
              executor=executor.name, _loader=lambda key, digest: load(cache, key, digest))
    s = _begin(flow, cache, plan, prepared, run, hits, needed, options, executor)
    s.cold = cold
    if stale is not None:
        s.fresh, s.expired = True, stale
    try:
        if s.observed:
            s.emit(RunStarted(run, plan.params))  # values for the history, never kept
        for name, hit in hits.items():
            settle_hit(s, name, hit)
        _loop_until_collected(s)
        mark_unneeded(s)
    except BaseException as e:
        _abort(s, e)
        raise
    finally:
        if owned:
            executor.shutdown()
        land_all(s)
        if s.leases is not None:  # nodes still waiting for a colleague's lease stop
            end_leases(s)
        if s.timed is not None:
            s.timed.shutdown()
        run.remote = cache.finish_run(run.flow, run.id, run.started)  # its remote manifest
        cache.flush(manifests=False)  # entries land before the run returns; its
        # manifest (one PUT) is left to land in the background (remote_manifests.py)
        run.ended = time.time()
        if options.publish:
            flow.last_run = run
        if run.status == "running":  # a failure every consumer caught fails no run
            run.status = "failed" if any(not run.nodes[n].caught for n in run.failed) \
                else "completed"
        if s.observed:
            s.emit(RunFinished(run))
    return run


def _begin(flow: Flow, cache: Cache, plan: Plan, prepared: Mapping[str, Prepared], run: Run,
           hits: Mapping[str, Hit], needed: list[str], options: RunOptions,
           executor: Executor) -> RunState:
    """The state of a run about to start: what each needed node waits for, and who reads it."""
    needed_set = set(needed)
    eager_of = eager_edges(plan)
    remaining: dict[str, tuple[str, ...] | set[str]] = {}
    consumers = dict.fromkeys(plan.order, 0)
    for n in needed:
        eager = eager_of[n]
        if len(eager) == 1:  # the usual node: no generator, no set
            for up in eager.values():
                remaining[n] = (up,) if up in needed_set else ()
                consumers[up] += 1
            continue
        remaining[n] = waiting(up for up in eager.values() if up in needed_set)
        for up in set(eager.values()):
            consumers[up] += 1
    overrides = options.overrides
    # a node declared without options has the default policy (policy_for would agree)
    policies = {n: DEFAULTS if not overrides and plan.nodes[n].options is DEFAULT_NODE_OPTIONS
                else policy_for(n, plan.nodes[n].options, overrides) for n in needed}
    caps = Capabilities.of(executor)
    prioritized = any(p.priority for p in policies.values())
    lazy = lazy_params(plan)
    buses = [bus for bus in (flow.events, GLOBAL) if bus] if options.publish else []
    observers = tuple(options.observers)
    watched = bool(observers)  # anyone takes node events (no call when nobody listens)
    for bus in buses:
        watched = watched or bus.watches_nodes
    return RunState(
        flow=flow, cache=cache, plan=plan, prepared=prepared, run=run, options=options,
        executor=executor, caps=caps, targets=frozenset(plan.targets), lazy=lazy,
        hits=dict(hits), digests={n: h.meta["digest"] for n, h in hits.items()},
        keys={n: h.key for n, h in hits.items()}, remaining=remaining, consumers=consumers,
        ready=deque(sorted((n for n in needed if not remaining[n]),
                           key=lambda n: -policies[n].priority) if prioritized
                    else (n for n in needed if not remaining[n])),
        policies=policies, features={}, prioritized=prioritized,
        # executors that place work themselves (Dask) get needs as worker resources instead
        gate=Gate(options.resources, {} if caps.places_work
                  else {n: p.resources for n, p in policies.items()}),
        sharing=Sharing.for_run(caps, cache.tiers), waits=not _on_event_loop(),
        buses=buses, observers=observers, observed=bool(buses or observers),
        watched=watched,
        demanded={n: set() for n, ps in lazy.items() if ps})


def _loop_until_collected(s: RunState) -> None:
    """Loop; then load the values of cached targets, looping again for any whose entry
    vanished meanwhile."""
    __tracebackhide__ = True  # IPython hides this frame from a node's traceback
    cancel = s.options.cancel
    unsubscribe = cancel.on_cancel(lambda: s.finished.put(None)) if cancel else None
    try:
        _loop(s)
        while not _collect(s):
            _loop(s)
    finally:
        if unsubscribe is not None:
            unsubscribe()


def _loop(s: RunState) -> None:
    """Start ready nodes while workers are free; settle them as they finish."""
    __tracebackhide__ = True  # IPython hides this frame from a node's traceback
    ready, running, parked = s.ready, s.running, s.parked
    poll = _SIGNAL_POLL if threading.current_thread() is threading.main_thread() else None
    while ((ready or parked) and s.fatal is None) or running:
        _check_cancel(s)
        while ready and s.fatal is None \
                and len(running) - len(s.lane) < s.executor.max_workers:
            if s.options.cancel is not None:
                _check_cancel(s)
            name = s.gate.take(ready)  # the first ready node whose resources are free
            if name is None:
                break
            future = start(s, name)
            if future is None:
                settled(s, name)
            elif future.done():
                _complete(s, name, future)
            else:
                running[future] = name
                future.add_done_callback(s.finished.put)
        if s.graphs is not None:
            flush(s)  # what this pass started goes to the cluster as one graph (graphs.py)
        if not running and not (parked and s.fatal is None):
            continue
        timeout = next_deadline(s)
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        s.cache.commit()  # buffered writes (disk tier) land while this waits
        for done in _finished(s, timeout):
            if isinstance(done, str):  # a parked node whose key landed: look it up again
                parked.discard(done)
                make_ready(s, done)
            elif done in running:  # not one abandoned at its deadline
                _complete(s, running.pop(done), done)
        if s.deadlines:
            expire_deadlines(s)
    if s.fatal is not None:
        raise s.fatal


def _finished(s: RunState, timeout: float | None) -> list[Future[Outcome] | str]:
    """Futures that finished and parked nodes woken: waits up to ``timeout`` for one,
    then takes all that are in. A cancellation wakes the wait with neither."""
    try:
        first = s.finished.get(timeout=timeout)
    except Empty:
        return []
    found = [first] if first is not None else []
    while True:
        try:
            future = s.finished.get_nowait()
        except Empty:
            return found
        if future is not None:
            found.append(future)


def _complete(s: RunState, name: str, future: Future[Outcome]) -> None:
    s.lane.discard(future)
    s.deadlines.pop(future, None)
    s.unstarted.discard(future)
    try:
        outcome = future.result()
    except BaseException as e:  # the executor itself failed (a dead worker, say)
        outcome = Outcome(error=e, attempts=1, started=time.time(), ended=time.time())
    settle(s, name, outcome)
    settled(s, name)


def _collect(s: RunState) -> bool:
    """Load the values of cached targets; False when one vanished and was scheduled again."""
    for name in s.plan.targets:
        if name in s.run.values or s.run.nodes[name].status != "cached":
            continue
        try:
            # every consumer has settled: the caller is the last reader (a consumer
            # computed again after a demotion loads it from the cache once more)
            s.run.values[name] = value_of(s, name, last=True)
        except Vanished:
            demote(s, name)
            return False
    return True


def _check_cancel(s: RunState) -> None:
    cancel = s.options.cancel
    if cancel is not None and cancel.cancelled:
        raise CancelledError(f"run of {list(s.plan.targets)} cancelled "
                             f"({cancel.reason}); finished nodes stay cached")


def _abort(s: RunState, error: BaseException) -> None:
    """Stop: running nodes are stopped where possible; unsettled ones are marked."""
    interrupted = isinstance(error, (KeyboardInterrupt, CancelledError))
    s.run.status = "cancelled" if interrupted else "failed"
    s.run.error = error
    for future in list(s.running):
        executor_of(s, future).abandon(future)
    if s.graphs is not None:
        stop_ahead(s)  # steps submitted ahead run on the cluster too (graphs.py)
    _keep_finished(s)
    land_all(s)  # requests waiting for a key this run computed take over
    failed = next((n for n, r in s.run.nodes.items() if r.status == "failed"), None)
    for record in s.run.nodes.values():
        if not record.done:
            record.status = "cancelled" if interrupted else "skipped"
            record.reason = (f"run cancelled: {error}" if interrupted
                             else f"not run: node {failed!r} failed" if failed
                             else f"not run: {type(error).__name__}")
            if s.watched:
                s.emit(NodeFinished(s.run, record))


def _keep_finished(s: RunState) -> None:
    """Settle the nodes whose task finished as the run stopped: finished nodes stay cached
    (on a graph executor a task may finish before the engine hears of it)."""
    for future, name in list(s.running.items()):
        if not future.done() or future.cancelled() or future.exception() is not None:
            continue
        try:
            settle(s, name, future.result())
        except Exception:  # it cannot be settled (say, unhashable): it stays unsettled
            continue


def _on_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (a Jupyter cell's thread is)."""
    asyncio = sys.modules.get("asyncio")  # not imported: no loop can be running
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
