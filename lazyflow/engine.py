"""Run a plan: decide hits, schedule misses, call, record, emit events.

Design note
-----------
Policy. A request is answered in three steps, all on plain data:

1. **Prepare** every node of the plan: its code fingerprint, the digests of
   its flow inputs, and its *trace key* (``keys.py``) — pure CPU, no cache.
2. **Resolve** backwards from the targets: a node whose trace record points to
   a stored entry is a hit and its ancestors are not even looked at; any
   other node is *needed*, and so are its upstream nodes. This is what makes
   a request lazy: a cached target loads no ancestor value and reads no
   ancestor entry.
3. **Execute** the needed nodes in dependency order (``ready`` queue,
   ``running`` set, ``remaining`` upstream counts — dask's ``local.py``
   shape). Before calling a node, its *content key* is computed from its
   inputs' value digests and looked up once more: an upstream node that
   re-ran and returned an equal value leaves it cached (early cutoff).

State. ``digests`` (value digest per resolved node), ``values`` (values held
for consumers still to run; released when the last consumer has started),
``records`` (one ``NodeRecord`` per node touched), ``remaining`` (the upstream
nodes each needed node still waits for), ``flying`` and ``parked`` (keys led,
nodes waiting for another request), ``vanished`` (demoted hits).

Features hook in at a few points rather than in the loop: lazy inputs
(``lazy.py``) are edges the scheduler does not wait for — a node that calls
one it does not have is sent back to wait (``_demand``) and re-run; map nodes
(``mapping.py``) submit one task per element that misses and gather them into
one future; output files (``files.py``) are captured on store and restored on
load; ``lf.Skip`` (``skip.py``) settles a node as skipped.

Two hooks keep a hit honest and a miss single. A hit's value is read only
when a consumer starts (or, for a target, when the loop is done), and its
entry may have vanished by then (evicted, deleted, damaged): ``_demote``
turns it back into a miss of the same run, with its own parameters, its
ancestors resolved like a lazy input's (``_need``), and its dependents keyed
by whatever digest it now computes to. Rejected: computing it in a nested
run, which cannot know the node's own parameters (only the union of the
request's), reports a second run, and leaves the consumer keyed by the old
digest. Before computing a node whose result may be served, the engine
claims its content key (``flights.py``); a node whose key another request of
this process is computing is *parked* (no worker held) until that one lands,
then looked up again.

The engine knows nothing of notebooks: it tells the world through
``events.py``. Executors only *call* functions; hashing, storing and
recording stay here, so every executor gives the same records as the
synchronous reference path.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any

import lazyflow.environment as environment
import lazyflow.files as files
import lazyflow.keys as keys
import lazyflow.lazy as lazy
import lazyflow.mapping as mapping
import lazyflow.skip as skip
from lazyflow._version import __version__
from lazyflow.cache.base import Meta
from lazyflow.cache.snapshot import handout, immutable, shareable
from lazyflow.cancel import CancelToken
from lazyflow.errors import (
    CacheWarning,
    CancelledError,
    HashingError,
    LazyflowWarning,
    MapError,
    NodeTimeout,
)
from lazyflow.events import GLOBAL, NodeFinished, NodeStarted, RunFinished, RunStarted, Subscriber
from lazyflow.executors import (
    Executor,
    Outcome,
    SyncExecutor,
    Task,
    ThreadExecutor,
    resolve_executor,
)
from lazyflow.executors.shared import Sharing
from lazyflow.fingerprint import Fingerprint
from lazyflow.flights import FLIGHTS, called_here
from lazyflow.hashing import hash_value
from lazyflow.options import DEFAULT as DEFAULT_NODE_OPTIONS
from lazyflow.policies import DEFAULTS, policy_for
from lazyflow.records import (
    ElementMeta,
    EntryMeta,
    EnvironmentRecord,
    LatestRecord,
    LazyTraceRecord,
    TraceRecord,
)
from lazyflow.resources import Gate, Resources
from lazyflow.run import Explanation, ExplanationRow, NodeRecord, Run, Status

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.graph import Plan

__all__ = ["RunOptions", "execute", "explain"]

_START_POLL = 0.05  # seconds between checks whether a timed task has started running
# Longest the main thread sleeps waiting for tasks. A SIGINT (Ctrl-C, a kernel interrupt)
# whose C handler ran on another thread, or on the main thread just before it went to
# sleep, does not wake it: its KeyboardInterrupt is raised only when the main thread next
# runs Python code (CPython), so it must never sleep unboundedly while a node runs.
_SIGNAL_POLL = 0.1

REUSE_NONDETERMINISTIC: ContextVar[bool] = ContextVar("lazyflow_reuse_nondeterministic",
                                                      default=False)
"""When true, ``deterministic=False`` nodes may be served from the cache (see provenance.py)."""
_PID = [os.getpid()]  # os.getpid() is a system call: it cost ~1 µs per stored node
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


@dataclass(slots=True)
class _Prepared:
    """Per-node facts of one request that need no cache."""

    fp: Fingerprint
    code: str  # what keys take for the code: the fingerprint, scoped to the environment or not
    params: dict[str, str]
    trace: str | None
    cacheable: bool  # its result is stored
    reusable: bool  # a stored result may be served (false for deterministic=False nodes)


@dataclass(slots=True)
class _Hit:
    key: str
    meta: EntryMeta
    tier: str


VANISHED = "entry vanished from the cache (evicted or damaged); recomputed"
"""The reason of a node whose hit was demoted to a miss (``_State._demote``)."""
_CHANGED = "; the new value differs from the vanished one, so its dependents were recomputed"
_WAITING = "waiting for another request computing the same value"
NOT_NEEDED = "not needed"
"""The reason of a node behind a lazy input that no node called (``mark_unneeded``)."""


class _Vanished(Exception):
    """A settled node's entry could not be loaded any more (evicted, damaged, deleted)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


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


# --------------------------------------------------------------------------- prepare / resolve


def _prepare(plan: Plan, environment: str = "") -> dict[str, _Prepared]:
    """Fingerprint, parameter digests and trace key of every node of ``plan``.

    ``environment``: the environment digest keys are scoped to
    (``lf.Cache(scope="environment")``), or ``""`` when they are not.

    The previous request's results live in ``plan.memo``; a node whose
    fingerprint is the very same (still valid) object, whose parameter
    digests are equal and none of whose ancestors changed keeps its entry,
    so a repeated request pays one fingerprint validation per node.
    """
    previous: dict[str, _Prepared] = plan.memo.get("prepared") or {}
    prepared: dict[str, _Prepared] = {}
    changed: set[str] = set()
    input_digests: dict[int, str] = {}
    for name in plan.order:
        node = plan.nodes[name]
        fp = node.fingerprint()
        params: dict[str, str] = {}
        for param, value in plan.params[name].items():
            digest = input_digests.get(id(value))
            if digest is None:
                try:
                    digest = hash_value(value)
                except HashingError as e:
                    raise e.located(name, param) from e
                input_digests[id(value)] = digest
            params[param] = digest
        edges = plan.upstream[name]
        cacheable = node.cache and not fp.volatile
        reusable = cacheable and (node.options.deterministic
                                  or REUSE_NONDETERMINISTIC.get())
        code = keys.scoped(fp.digest, environment) if environment else fp.digest
        old = previous.get(name)
        if old is not None and old.fp is fp and old.code == code and old.params == params \
                and old.reusable == reusable \
                and (not changed or changed.isdisjoint(edges.values())):
            prepared[name] = old
            continue
        files.warn_untracked_paths(node, name, plan.params[name])  # a reused node was checked
        changed.add(name)
        trace: str | None = None
        if reusable:
            upstream = {p: prepared[up].trace for p, up in edges.items()}
            if None not in upstream.values():
                trace = keys.trace_key(code, params, upstream)  # type: ignore[arg-type]
        prepared[name] = _Prepared(fp, code, params, trace, cacheable, reusable)
    plan.memo["prepared"] = prepared
    return prepared


def _scope(cache: Cache) -> str:
    """The environment digest keys are scoped to, or ``""`` (``lf.Cache(scope=...)``)."""
    return environment.current().digest if cache.scope == "environment" else ""


def _eager(plan: Plan, name: str) -> dict[str, str]:
    """The edges of ``name`` the scheduler waits for: all but its lazy inputs (``lazy.py``)."""
    return _eager_edges(plan)[name]


def _eager_edges(plan: Plan) -> dict[str, dict[str, str]]:
    """Every node's eager edges (its upstream dict itself when it has no lazy input);
    like the lazy parameters they depend on the nodes alone: once per plan structure."""
    found: dict[str, dict[str, str]] | None = plan.memo.get("eager")
    if found is None:
        lazy_of, upstream = _lazy_params(plan), plan.upstream
        found = plan.memo["eager"] = {
            n: {p: up for p, up in upstream[n].items() if p not in lazy_of[n]} if lazy_of[n]
            else upstream[n] for n in plan.order}
    return found


def _lazy_params(plan: Plan) -> dict[str, frozenset[str]]:
    """Each node's lazy parameters; they depend on the nodes alone, so once per plan structure."""
    found: dict[str, frozenset[str]] | None = plan.memo.get("lazy")
    if found is None:
        found = plan.memo["lazy"] = {n: lazy.lazy_params(plan.nodes[n]) for n in plan.order}
    return found


def _resolve(flow: Flow, plan: Plan, prepared: Mapping[str, _Prepared],
             roots: Sequence[str] | None = None, seen: set[str] | None = None,
             cache: Cache | None = None) -> tuple[dict[str, _Hit], list[str], set[str]]:
    """Walk back from ``roots`` (the targets); return hits, needed nodes in order, and the
    nodes behind lazy inputs that may be needed (``maybe``). Names in ``seen`` are skipped;
    ``cache`` is the one the run answers from (the flow's unless ``RunOptions.cache``)."""
    hits: dict[str, _Hit] = {}
    needed: set[str] = set()
    seen = set() if seen is None else seen
    behind_lazy: list[str] = []
    stack = list(plan.targets if roots is None else roots)
    cache = flow.cache if cache is None else cache
    eager_of = _eager_edges(plan)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        trace = prepared[name].trace
        if trace is not None:
            record: TraceRecord | None = cache.find_record(trace)
            if record is not None:
                found = cache.lookup(record["key"])
                if found is not None:
                    hits[name] = _Hit(record["key"], found[0], found[1])
                    continue
        needed.add(name)
        eager = eager_of[name]
        stack.extend(eager.values())
        if eager is not plan.upstream[name]:
            behind_lazy.extend(up for p, up in plan.upstream[name].items() if p not in eager)
    maybe: set[str] = set()
    while behind_lazy:
        name = behind_lazy.pop()
        if name not in seen and name not in maybe:
            maybe.add(name)
            behind_lazy.extend(plan.upstream[name].values())
    return hits, [n for n in plan.order if n in needed], maybe


# --------------------------------------------------------------------------- execute


_FEW = 8  # upstream nodes a node waits for, up to which a tuple holds them rather than a set


def _waiting(upstream: Iterable[str]) -> tuple[str, ...] | set[str]:
    """The distinct upstream nodes a node waits for: a tuple when there are few (the cyclic
    GC stops tracking a tuple of strings, and walks a set, one per node, for the whole
    run), a set when there are many (a tuple would be rebuilt as each one settles)."""
    distinct = tuple(dict.fromkeys(upstream))
    return distinct if len(distinct) <= _FEW else set(distinct)


def _load(cache: Cache, key: str) -> Any:
    """A stored value, with the output files it names put back if deleted (``files.py``)."""
    value, _ = cache.load(key)
    files.restore(value, cache)
    return value


def _loader(cache: Cache, key: str, param: str) -> Callable[[], Any]:
    """Loads a lazy input's stored value when the node calls it; an entry that vanished
    since sends the node back to the engine (``Demand``), which computes it again."""
    def load() -> Any:
        try:
            return _load(cache, key)
        except KeyError:
            raise lazy.Demand(param) from None
    return load


def _shared_inputs(plan: Plan) -> dict[int, Any]:
    """Flow-input objects passed to more than one node that could change in place, by
    identity, with the snapshot each such node gets its own copy from."""
    seen: dict[int, Any] = {}
    shared: dict[int, Any] = {}
    for params in plan.params.values():
        for value in params.values():
            if id(value) in seen and id(value) not in shared and not immutable(value):
                shared[id(value)] = shareable(value)
            seen[id(value)] = value
    return shared


_ENVIRONMENTS_RECORDED: weakref.WeakSet[Cache] = weakref.WeakSet()


def _recorded_environment(cache: Cache) -> str:
    """This process's environment digest, its description recorded in ``cache`` once, so
    ``explain`` can say what differs when a hit was computed elsewhere."""
    env = environment.current()
    if cache not in _ENVIRONMENTS_RECORDED:
        _ENVIRONMENTS_RECORDED.add(cache)
        described: EnvironmentRecord = {"environment": env.describe()}
        cache.record(keys.environment_key(env.digest), described)
    return env.digest


def environment_note(cache: Cache, meta: Meta) -> str:
    """``"; computed in another environment (numpy 1.26.4 -> 2.1.0)"`` when the entry of
    ``meta`` was computed in an environment other than this one; else ``""``."""
    produced = meta.get("env")
    here = environment.current()
    if not produced or produced == here.digest:
        return ""
    record: EnvironmentRecord | None = cache.find_record(keys.environment_key(produced))
    described = record.get("environment") if record else None
    if not isinstance(described, dict):
        return "; computed in another environment"
    changes = environment.differences(described, here.describe())
    shown = ", ".join(changes[:6]) + (f", and {len(changes) - 6} more" if len(changes) > 6
                                      else "")
    return f"; computed in another environment ({shown})" if changes \
        else "; computed in another environment"


def _store(cache: Cache, key: str, value: Any, meta: Meta) -> Meta | None:
    """Store a value, and the bytes of the output files it names (``files.py``); return
    the metadata the fastest tier stored, if it says (``Cache.store``)."""
    files.capture(value, cache)
    return cache.store(key, value, meta)


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
    options = options or RunOptions()
    cache = flow.cache if options.cache is None else options.cache
    prepared = _prepare(plan, _scope(cache))
    hits, needed, maybe = _resolve(flow, plan, prepared, cache=cache)
    touched = hits.keys() | set(needed) | maybe
    records = {n: NodeRecord(n) for n in plan.order if n in touched}
    executor, owned = resolve_executor(options.executor, options.max_workers)
    run = Run(flow.name, plan.targets, records,
              inputs={p: d for n in plan.order for p, d in prepared[n].params.items()},
              code={n: prepared[n].fp.components for n in records}, cache=cache,
              executor=executor.name, _loader=lambda key: _load(cache, key))
    state = _State(flow, plan, prepared, run, hits, needed, options, executor)
    try:
        state.emit(RunStarted(run))
        for name, hit in hits.items():
            state.mark_cached(name, hit)
        state.loop()
        state.mark_unneeded()
    except BaseException as e:
        state.abort(e)
        raise
    finally:
        if owned:
            executor.shutdown()
        state.shutdown()
        cache.flush()  # background (remote) writes land before the run returns
        run.ended = time.time()
        if options.publish:
            flow.last_run = run
        if run.status == "running":
            run.status = "failed" if run.failed else "completed"
        state.emit(RunFinished(run))
    return run


class _State:
    """The mutable state of one run, and the steps that move it forward."""

    def __init__(self, flow: Flow, plan: Plan, prepared: Mapping[str, _Prepared], run: Run,
                 hits: Mapping[str, _Hit], needed: list[str], options: RunOptions,
                 executor: Executor) -> None:
        self.flow = flow
        self.cache = flow.cache if options.cache is None else options.cache
        self.plan = plan
        self.targets = frozenset(plan.targets)  # plan.targets is a tuple: O(n) membership
        self.prepared = prepared
        self.run = run
        self.options = options
        self.executor = executor
        self.timed: Executor | None = None  # a thread for sync nodes with a timeout
        self.hits = dict(hits)
        self.digests: dict[str, str] = {n: h.meta["digest"] for n, h in hits.items()}
        self.values: dict[str, Any] = {}  # values (or snapshots, snapshot.py) readers take
        self.shared_inputs: dict[int, Any] | None = None  # see _flow_inputs
        self.keys: dict[str, str] = {n: h.key for n, h in hits.items()}
        # compute seconds that produced each value, its ancestry included ("time saved")
        self.costs: dict[str, float] = {}
        needed_set = set(needed)
        # upstream nodes each needed node still waits for (eager edges, plus lazy inputs
        # it demanded); a node is ready when its set is empty
        eager_of = _eager_edges(plan)
        remaining: dict[str, tuple[str, ...] | set[str]] = {}
        consumers = dict.fromkeys(plan.order, 0)
        for n in needed:
            eager = eager_of[n]
            if len(eager) == 1:  # the usual node: no generator, no set
                for up in eager.values():
                    remaining[n] = (up,) if up in needed_set else ()
                    consumers[up] += 1
                continue
            remaining[n] = _waiting(up for up in eager.values() if up in needed_set)
            for up in set(eager.values()):
                consumers[up] += 1
        self.remaining = remaining
        self.consumers = consumers
        self.lazy = _lazy_params(plan)
        self.demanded: dict[str, set[str]] = {n: set() for n, ps in self.lazy.items() if ps}
        self.used: dict[str, list[str]] = {}  # lazy inputs each lazy node called, in order
        self.maps: dict[str, mapping.MapRun] = {}
        self.ready: deque[str] = deque(n for n in needed if not remaining[n])
        self.running: dict[Future[Outcome], str] = {}
        # running futures land here as they finish (dask's local scheduler works alike):
        # one queue read per wake, where concurrent.futures.wait hooks every running future;
        # so do the names of parked nodes whose key another request has finished computing
        self.finished: SimpleQueue[Future[Outcome] | str | None] = SimpleQueue()
        # single-flight (flights.py): the key each computing node leads, the nodes parked
        # until another computation of their key lands; a thread running an event loop
        # must not wait for other requests, so there nodes lead or compute, never park
        self.flying: dict[str, str] = {}
        self.parked: set[str] = set()
        self.waits = not _on_event_loop()
        # hits whose entry vanished before it was read (_demote): the digest their
        # dependents were keyed with; and, for nodes running when an input vanished,
        # the (digest, key) of that input they started with
        self.vanished: dict[str, str] = {}
        self.kept: dict[str, dict[str, tuple[str, str]]] = {}
        self.deadlines: dict[Future[Outcome], float] = {}
        self.unstarted: set[Future[Outcome]] = set()  # timed, but not running yet
        self.fatal: BaseException | None = None
        self.stopped: set[str] = set()  # failed or skipped: their consumers are skipped
        # values that stand in for a failure (fallbacks) and everything computed from them:
        # never linked by trace key, so the next request retries the failed node
        self.untraced: set[str] = set()
        overrides = options.overrides
        # a node declared without options has the default policy (policy_for would agree)
        self.policies = {n: DEFAULTS if not overrides
                         and plan.nodes[n].options is DEFAULT_NODE_OPTIONS
                         else policy_for(n, plan.nodes[n].options, overrides) for n in needed}
        # executors that place work themselves (Dask) get needs as worker resources instead
        self.sharing = Sharing.for_run(executor, self.cache.tiers)  # workers use the cache
        self.gate = Gate(options.resources, {} if getattr(executor, "places_work", False)
                         else {n: p.resources for n, p in self.policies.items()})
        self.buses = [bus for bus in (flow.events, GLOBAL) if bus] if options.publish else []
        self.observers = tuple(options.observers)
        self.observed = bool(self.buses or self.observers)  # else skip building events

    def emit(self, event: Any) -> None:
        for bus in self.buses:
            bus.emit(event)
        for observer in self.observers:
            observer(event)

    # ----------------------------------------------------------------- the loop

    def loop(self) -> None:
        """Start ready nodes while workers are free; settle them as they finish; then load
        the values of cached targets (computing again any whose entry vanished meanwhile)."""
        cancel = self.options.cancel
        unsubscribe = cancel.on_cancel(lambda: self.finished.put(None)) if cancel else None
        try:
            self._loop()
            while not self._collect():
                self._loop()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    def _loop(self) -> None:
        ready = self.ready
        running = self.running
        parked = self.parked
        cancel = self.options.cancel
        poll = _SIGNAL_POLL if threading.current_thread() is threading.main_thread() else None
        while ((ready or parked) and self.fatal is None) or running:
            self._check_cancel()
            while ready and self.fatal is None and len(running) < self.executor.max_workers:
                if cancel is not None:
                    self._check_cancel()
                name = self.gate.take(ready)  # the first ready node whose resources are free
                if name is None:
                    break
                future = self.start(name)
                if future is None:
                    self._settled(name, ready)
                elif future.done():
                    self._complete(name, future, ready)
                else:
                    running[future] = name
                    future.add_done_callback(self.finished.put)
            if not running and not (parked and self.fatal is None):
                continue
            timeout = (max(0.0, min(self.deadlines.values()) - time.monotonic())
                       if self.deadlines else None)
            if poll is not None:
                timeout = poll if timeout is None else min(timeout, poll)
            self.cache.commit()  # buffered writes (disk tier) land while this waits
            for done in self._finished(timeout):
                if isinstance(done, str):  # a parked node whose key landed: look it up again
                    parked.discard(done)
                    ready.append(done)
                elif done in running:  # not one abandoned at its deadline
                    self._complete(running.pop(done), done, ready)
            self._expire_deadlines(ready)
        if self.fatal is not None:
            raise self.fatal

    def _finished(self, timeout: float | None) -> list[Future[Outcome] | str]:
        """Futures that finished and parked nodes woken: waits up to ``timeout`` for one,
        then takes all that are in.

        A cancellation wakes the wait with neither.
        """
        try:
            first = self.finished.get(timeout=timeout)
        except Empty:
            return []
        found = [first] if first is not None else []
        while True:
            try:
                future = self.finished.get_nowait()
            except Empty:
                return found
            if future is not None:
                found.append(future)

    def start(self, name: str) -> Future[Outcome] | None:
        """Settle ``name`` from the cache, skip it, park it, or submit it; return its future
        if submitted."""
        prep = self.prepared[name]
        lazy_ps = self.lazy[name]
        upstream = self._counted(name) if lazy_ps else self.plan.upstream[name]
        record = self.run.nodes[name]
        digests = self.digests
        if self.stopped:
            blocked = next((up for up in upstream.values()
                            if up in self.stopped and up not in digests), None)
            if blocked is not None:
                self._stop(name, "skipped", skip.inherited_reason(blocked,
                                                                  self.run.nodes[blocked]))
                self._release_inputs(name)
                self.emit(NodeFinished(self.run, record))
                return None
        try:
            inputs = {p: digests[up] for p, up in upstream.items()}
        except KeyError:  # an input whose entry vanished is being computed again (_demote)
            self._wait(name, [up for up in upstream.values() if up not in digests])
            return None
        key = keys.content_key(prep.code, prep.params, inputs)
        record.key = key
        if prep.reusable and not (self.vanished and name in self.vanished):
            lookup: str | None = key
            if lazy_ps:
                waiting, lookup = self._replay(name)
                if waiting:
                    return None
            if lookup is not None:
                found = self.cache.lookup(lookup)
                if found is not None:
                    key = record.key = lookup
                    self.mark_cached(name, _Hit(key, found[0], found[1]))
                    self._link_trace(name, key, found[0]["digest"])
                    self._release_inputs(name)
                    return None
            if not self._lead(name, key):
                return None
        node = self.plan.nodes[name]
        mapped = node.options.map is not None
        # inputs by key from the shared tier (not for lazy or mapped nodes: they run here)
        shared = self.sharing.inputs(upstream, self.keys) \
            if self.sharing is not None and prep.cacheable and not lazy_ps \
            and not mapped else None
        kwargs = self._flow_inputs(name)
        values = self.values
        try:
            for param, up in self.plan.upstream[name].items():
                if lazy_ps and param in lazy_ps:
                    kwargs[param] = self._thunk(name, param, up)
                elif shared is None or param not in shared:
                    kwargs[param] = handout(values[up]) if up in values \
                        else self._value_of(up)
        except _Vanished as e:  # compute that input again, in this run; then start over
            self._land(name)
            self._demote(e.node)
            self._wait(name, [e.node])
            return None
        if not lazy_ps:
            self._release_inputs(name)  # lazy nodes may be called again: release when settled
        record.reason = VANISHED if self.vanished and name in self.vanished \
            else self._why(name, inputs)
        record.status = "running"
        record.started = time.time()
        if self.observed:
            self.emit(NodeStarted(self.run, name))
        policy = self.policies[name]
        executor = self.executor
        if policy.timeout is not None and executor.name == "sync":
            if self.timed is None:
                self.timed = ThreadExecutor(max_workers=1)
            executor = self.timed
        if mapped:
            future = self._submit_map(name, inputs, kwargs, executor)
        else:
            task = Task(name, lazy.Call(node.call, lazy_ps) if lazy_ps else node.call, kwargs,
                        policy, key=self.flying.get(name))
            if shared is not None:
                assert self.sharing is not None
                base = sum(self.costs.get(up, 0.0) for up in set(upstream.values()))
                task = self.sharing.task(task, shared, key,
                                         self._meta(name, upstream, inputs, "", 0.0, base, 0.0))
            if type(executor) is SyncExecutor:  # what its submit does, minus a future per node
                self.settle(name, task())
                return None
            future = executor.submit(task)
        if policy.timeout is not None:
            self.deadlines[future] = time.monotonic() + policy.timeout
            if not future.running():  # queued, or its worker still starting: not timed yet
                self.unstarted.add(future)
                self.deadlines[future] = time.monotonic() + min(policy.timeout, _START_POLL)
        return future

    def _complete(self, name: str, future: Future[Outcome], ready: deque[str]) -> None:
        self.deadlines.pop(future, None)
        self.unstarted.discard(future)
        try:
            outcome = future.result()
        except BaseException as e:  # the executor itself failed (a dead worker, say)
            outcome = Outcome(error=e, attempts=1, started=time.time(), ended=time.time())
        self.settle(name, outcome)
        self._settled(name, ready)

    def settle(self, name: str, outcome: Outcome) -> None:
        """Record a finished task; then wake the requests waiting for its key, which take
        the stored value, or compute it themselves when there is none."""
        try:
            self._record_outcome(name, outcome)
        finally:
            if self.flying:
                self._land(name)
            if self.kept:
                self.kept.pop(name, None)

    def _record_outcome(self, name: str, outcome: Outcome) -> None:
        """Store a task's value, or apply the node's error policy."""
        record = self.run.nodes[name]
        if isinstance(outcome.error, lazy.Demand):  # called a lazy input not computed yet
            record.status = "pending"
            self._demand(name, outcome.error.param)
            return
        if name in self.maps:
            elements = self.maps.pop(name)
            outcome = mapping.collect(elements, outcome, name, lambda i, v, d: self._store_element(
                name, elements.keys[i], i, v, d))
        if self.lazy[name]:
            self._release_inputs(name)
            if isinstance(outcome.value, lazy.Traced):
                outcome = self._traced(name, outcome)
        record.attempts = outcome.attempts
        record.duration = outcome.duration
        if outcome.started:
            record.started = outcome.started
        record.ended = outcome.ended or time.time()
        if outcome.error is None:
            self.finish(name, outcome.value, outcome.duration, outcome.digest,
                        stored=outcome.stored)
            return
        error = outcome.error
        if isinstance(error, skip.Skip):
            self._stop(name, "skipped", error.reason)
            self.emit(NodeFinished(self.run, record))
            return
        self._note(error, name)
        policy = self.policies[name]
        record.error = error
        if policy.on_error == "fallback":
            self.untraced.add(name)
            self.finish(name, policy.fallback, outcome.duration, None, store=False)
            record.reason = f"fallback after {type(error).__name__}: {error}"
            return
        self._stop(name, "failed", f"{type(error).__name__}: {error}")
        self.emit(NodeFinished(self.run, record))
        if policy.on_error == "raise" and self.fatal is None:
            self.fatal = error

    def finish(self, name: str, value: Any, duration: float, digest: str | None,
               *, store: bool = True, stored: bool = False) -> None:
        """Record a computed value: digest, store, trace, events.

        ``stored``: a worker already wrote the value to the shared tier and
        sent none back; it is loaded from the cache if anyone here needs it.
        """
        prep = self.prepared[name]
        record = self.run.nodes[name]
        if digest is None:
            digest = self._digest_of_result(name, value, cacheable=prep.cacheable and store)
        record.duration = duration
        record.ended = record.ended or time.time()
        record.digest = digest
        record.status = "completed"
        if self.vanished and self.vanished.get(name, digest) != digest:
            # dependents not started yet take the new digest (start keys them by digests);
            # those running with the old value keep the key they were started with (kept)
            record.reason += _CHANGED
        self.digests[name] = digest
        key = record.key
        assert key is not None
        self.keys[name] = key
        upstream = self._counted(name, keyed=True) if self.lazy[name] else self.plan.upstream[name]
        if len(upstream) == 1:  # sum() of one cost, without a set and a generator
            cost = duration + self.costs.get(next(iter(upstream.values())), 0.0)
        else:
            cost = duration + sum(self.costs.get(up, 0.0) for up in set(upstream.values()))
        self.costs[name] = cost
        if not stored:
            readers = self.consumers[name] + (name in self.targets)
            # several readers (consumers, the caller) each get their own copy: one changing
            # its value in place must not change what another computes with (snapshot.py)
            kept = shareable(value) if readers > 1 else value
            if readers:
                self.values[name] = kept
            if name in self.targets:
                self.run.values[name] = handout(kept)
        if prep.cacheable and store:
            inputs = self._input_digests(name, upstream) if self.kept \
                else {p: self.digests[up] for p, up in upstream.items()}
            if stored:  # by a worker: consumers here load it from the cache
                found = self.cache.lookup(key)
                record.size = found[0].get("size") if found else None
                if found is not None:
                    assert self.sharing is not None
                    self.sharing.stored(key)
            else:  # the size the fastest tier accounts, as a lookup would report it
                kept = _store(self.cache, key, value, self._meta(
                    name, upstream, inputs, digest, duration, cost, record.ended))
                if kept is None:  # that tier does not say: ask
                    found = self.cache.lookup(key)
                    kept = found[0] if found else None
                record.size = kept.get("size") if kept else None
            self._link_trace(name, key, digest)
            latest: LatestRecord = {"digest": digest, "key": key, "params": prep.params,
                                    "input_digests": inputs, "fingerprint": prep.fp.components}
            self.cache.record(keys.latest_key(self.flow.name, name), latest, local=True)
        if self.observed:
            self.emit(NodeFinished(self.run, record))

    def _meta(self, name: str, upstream: Mapping[str, str], inputs: Mapping[str, str],
              digest: str, duration: float, cost: float, created: float) -> EntryMeta:
        """An entry's metadata; ``inputs`` are the value digests of ``upstream``."""
        prep = self.prepared[name]
        keys = self.keys
        kept = self.kept.get(name) if self.kept else None
        return {"digest": digest, "node": name, "flow": self.flow.name, "created": created,
                "duration": duration, "cost": cost, "lazyflow": __version__,
                "params": prep.params,
                "inputs": {p: kept[up][1] if kept and up in kept else keys[up]
                           for p, up in upstream.items()},
                "input_digests": inputs, "fingerprint": prep.fp.components, "pid": _PID[0],
                "env": _recorded_environment(self.cache)}

    def mark_cached(self, name: str, hit: _Hit) -> None:
        """Settle ``name`` as a hit; a target's value is loaded when the run ends (``_collect``)."""
        record = self.run.nodes[name]
        record.status = "cached"
        if record.reason is _WAITING:
            record.reason = "computed meanwhile by another request"
        record.tier = hit.tier
        record.key = hit.key
        record.digest = hit.meta["digest"]
        record.size = hit.meta.get("size")
        record.saved = float(hit.meta.get("cost") or hit.meta.get("duration") or 0.0)
        elsewhere = environment_note(self.cache, hit.meta)
        if elsewhere:
            record.reason = (record.reason or "cached") + elsewhere
        self.costs[name] = record.saved
        record.started = record.ended = time.time()
        self.digests[name] = hit.meta["digest"]
        self.keys[name] = hit.key
        self.hits[name] = hit
        self.emit(NodeFinished(self.run, record))

    def mark_unneeded(self) -> None:
        """Nodes behind lazy inputs that no node called end skipped, "not needed"."""
        for record in self.run.nodes.values():
            if record.status == "pending":
                record.status = "skipped"
                record.reason = NOT_NEEDED
                self.emit(NodeFinished(self.run, record))

    def abort(self, error: BaseException) -> None:
        """Stop: running nodes are stopped where possible; unsettled ones are marked."""
        interrupted = isinstance(error, (KeyboardInterrupt, CancelledError))
        self.run.status = "cancelled" if interrupted else "failed"
        self.run.error = error
        for future in self.running:
            self.executor.abandon(future)
        self._land_all()  # requests waiting for a key this run computed take over
        failed = next((n for n, r in self.run.nodes.items() if r.status == "failed"), None)
        for record in self.run.nodes.values():
            if not record.done:
                record.status = "cancelled" if interrupted else "skipped"
                record.reason = (f"run cancelled: {error}" if interrupted
                                 else f"not run: node {failed!r} failed" if failed
                                 else f"not run: {type(error).__name__}")
                self.emit(NodeFinished(self.run, record))

    def shutdown(self) -> None:
        """Release the helper thread used for timed nodes on the sync executor, and every
        key this run still claims."""
        self._land_all()
        if self.timed is not None:
            self.timed.shutdown()

    def _land_all(self) -> None:
        for name in list(self.flying):
            self._land(name)

    # ----------------------------------------------------------------- helpers

    def _check_cancel(self) -> None:
        cancel = self.options.cancel
        if cancel is not None and cancel.cancelled:
            raise CancelledError(f"run of {list(self.plan.targets)} cancelled "
                                 f"({cancel.reason}); finished nodes stay cached")

    def _stop(self, name: str, status: Status, reason: str) -> None:
        """Mark ``name`` failed or skipped: its consumers are then skipped in turn."""
        record = self.run.nodes[name]
        record.status = status
        record.reason = reason
        self.stopped.add(name)

    def _settled(self, name: str, ready: deque[str]) -> None:
        self.gate.release(name)  # a node sent back to wait is taken (and gated) again
        if not self.run.nodes[name].done:
            return  # sent back to wait for a lazy input it demanded
        downstream = self.plan.downstream[name]
        for d in downstream if len(downstream) < 2 else dict.fromkeys(downstream):
            waiting = self.remaining.get(d)
            if waiting and name in waiting:
                if isinstance(waiting, tuple):
                    waiting = self.remaining[d] = tuple(u for u in waiting if u != name) \
                        if len(waiting) > 1 else ()
                else:
                    waiting.discard(name)
                if not waiting:
                    ready.append(d)

    def _expire_deadlines(self, ready: deque[str]) -> None:
        now = time.monotonic()
        for future, deadline in list(self.deadlines.items()):
            if deadline > now or future.done():
                continue
            timeout = self.policies[self.running[future]].timeout
            assert timeout is not None
            if future in self.unstarted:  # its clock starts when it is first seen running
                if future.running():
                    self.unstarted.discard(future)
                self.deadlines[future] = now + (timeout if future.running()
                                                else min(timeout, _START_POLL))
                continue
            name = self.running.pop(future)
            del self.deadlines[future]
            executor = self.timed if self.timed is not None and self.executor.name == "sync" \
                else self.executor
            stopped = executor.abandon(future)
            policy = self.policies[name]
            detail = "" if stopped else \
                f" (its {executor.name} worker cannot be stopped and may still be running)"
            assert policy.timeout is not None
            started = self.run.nodes[name].started or time.time()
            self.settle(name, Outcome(error=NodeTimeout(name, policy.timeout, detail),
                                      attempts=1, started=started, ended=time.time(),
                                      duration=policy.timeout))
            self._settled(name, ready)
            if not stopped:
                warnings.warn(f"node {name!r} timed out{detail}", LazyflowWarning, stacklevel=2)

    def _value_of(self, name: str) -> Any:
        """A settled node's value; :class:`_Vanished` when its entry cannot be read any more."""
        if name in self.values:
            return handout(self.values[name])
        try:
            value = _load(self.cache, self.keys[name])
        except KeyError:
            raise _Vanished(name) from None
        if self.consumers[name] > 1 or name in self.targets:
            self.values[name] = shareable(value)  # later readers get copies of it
        return value  # a fresh copy from the cache: this reader's own

    def _collect(self) -> bool:
        """Load the values of cached targets; False when one vanished and was scheduled again."""
        for name in self.plan.targets:
            if name in self.run.values or self.run.nodes[name].status != "cached":
                continue
            try:
                self.run.values[name] = self._value_of(name)
            except _Vanished:
                self._demote(name)
                return False
        return True

    # ----------------------------------------------------------------- vanished entries

    def _demote(self, name: str) -> None:
        """``name`` was settled, but its entry vanished before its value was read (evicted
        by a larger value, deleted, damaged): it becomes a miss of this very run.

        Its ancestors are resolved (they may be hits) and it is computed with its own
        parameters. It no longer has a digest until then, so a dependent that starts waits
        for it and is keyed by the new digest; a dependent already running keeps the
        digest and key it was started with.
        """
        warnings.warn(f"the cache entry of node {name!r} vanished before it could be read "
                      "(evicted or damaged); computing it again in this run", CacheWarning,
                      stacklevel=4)
        digest, key = self.digests.pop(name), self.keys.pop(name)
        self.vanished[name] = digest
        for running in self.running.values():
            if name in self.plan.upstream[running].values():
                self.kept.setdefault(running, {})[name] = (digest, key)
        self.hits.pop(name, None)
        self.costs.pop(name, None)
        if self.lazy[name]:  # it demands its lazy inputs afresh when it runs again
            self.demanded[name].clear()
            self.used.pop(name, None)
        record = self.run.nodes[name]
        record.status, record.reason, record.tier, record.key = "pending", VANISHED, None, None
        record.digest, record.size, record.saved = None, None, 0.0
        self._need(list(_eager(self.plan, name).values()))
        self._schedule([name])

    def _input_digests(self, name: str, upstream: Mapping[str, str]) -> dict[str, str]:
        """The digests of ``upstream`` that ``name`` was started with."""
        kept = self.kept.get(name) if self.kept else None
        if not kept:
            return {p: self.digests[up] for p, up in upstream.items()}
        return {p: kept[up][0] if up in kept else self.digests[up] for p, up in upstream.items()}

    # ----------------------------------------------------------------- single-flight

    def _lead(self, name: str, key: str) -> bool:
        """Claim ``key`` for ``name`` (``flights.py``); False when another computation of it
        is in flight: ``name`` is parked until it lands, then looked up again.

        The claim's owner is the node's record: one per node and run, so a second node of
        this run with the same key waits for the first like any other request.
        """
        record = self.run.nodes[name]
        if FLIGHTS.lead(key, record):  # the usual case: no one computes it (and no callback)
            self.flying[name] = key
            return True
        if not self.waits or called_here(key):  # on an event loop's thread, or asked for
            return True  # by the very node computing it: compute it too, never wait
        if FLIGHTS.claim(key, record, lambda: self.finished.put(name)):  # landed meanwhile
            self.flying[name] = key
            return True
        self.parked.add(name)
        record.reason = _WAITING
        return False

    def _land(self, name: str) -> None:
        """``name`` is done computing its key, with a stored value or not: wake its waiters."""
        key = self.flying.pop(name, None)
        if key is not None:
            FLIGHTS.land(key, self.run.nodes[name])

    def _wait(self, name: str, upstream: Iterable[str]) -> None:
        """Send ``name`` back to wait for ``upstream``, which is being computed again."""
        self.remaining[name] = _waiting(upstream)

    def _flow_inputs(self, name: str) -> dict[str, Any]:
        """``name``'s flow-input values; one object passed to several nodes is handed to
        each as its own copy, so a node changing it in place cannot change another's."""
        if self.shared_inputs is None:
            self.shared_inputs = _shared_inputs(self.plan)
        params = self.plan.params[name]
        if not self.shared_inputs:
            return dict(params)
        shared = self.shared_inputs
        return {p: handout(shared[id(v)]) if id(v) in shared else v for p, v in params.items()}

    def _release_inputs(self, name: str) -> None:
        for up in set(self._counted(name).values()):
            self.consumers[up] -= 1
            if self.consumers[up] <= 0 and up not in self.targets:
                self.values.pop(up, None)

    # ----------------------------------------------------------------- lazy inputs and map

    def _counted(self, name: str, *, keyed: bool = False) -> dict[str, str]:
        """The edges a node waits for and holds values of: eager ones plus the lazy inputs it
        demanded; with ``keyed``, plus the lazy inputs it used instead (what its key covers)."""
        if not self.lazy[name]:
            return self.plan.upstream[name]
        upstream = self.plan.upstream[name]
        called = self.used[name] if keyed and name in self.used else self.demanded[name]
        return {p: up for p, up in upstream.items() if p not in self.lazy[name] or p in called}

    def _replay(self, name: str) -> tuple[bool, str | None]:
        """Replay a lazy node's recorded traces: ``(True, None)`` when it must wait for an
        input a trace names, else ``(False, key)`` with the content key a trace still vouches
        for, or ``None`` when none holds."""
        prep = self.prepared[name]
        eager = {p: self.digests[up] for p, up in _eager(self.plan, name).items()}
        record: LazyTraceRecord | None = self.cache.find_record(
            lazy.trace_record_key(keys.content_key(prep.code, prep.params, eager)))
        upstream = self.plan.upstream[name]
        verdict, found = lazy.replay(record["traces"] if record else (),
                                     lambda p: self.digests.get(upstream[p]))
        if verdict == "need":
            self._demand(name, found)
            return True, None
        if verdict == "hit":
            return False, keys.content_key(prep.code, prep.params, {**eager, **found})
        return False, None

    def _thunk(self, name: str, param: str, up: str) -> lazy.Thunk:
        if up in self.values or param in self.demanded[name]:
            return lazy.Thunk(param, value=self._value_of(up))
        if up in self.digests:  # settled (a hit): read it only if called
            return lazy.Thunk(param, has_value=False,
                              loader=_loader(self.cache, self.keys[up], param))
        return lazy.Thunk(param, has_value=False)

    def _demand(self, name: str, param: str) -> None:
        """``name`` needs lazy input ``param``: resolve it, schedule it, make ``name`` wait."""
        up = self.plan.upstream[name][param]
        if param not in self.demanded[name]:
            self.demanded[name].add(param)
            self.consumers[up] += 1
        record = self._touch(up)
        if record.status == "pending" and up not in self.remaining:  # undecided: resolve it
            self._need([up])
        if self.run.nodes[up].done:
            self.ready.append(name)
        else:
            self.remaining[name] = (up,)

    def _need(self, roots: Sequence[str]) -> None:
        """Resolve ``roots`` and their undecided ancestors: settle hits, schedule misses."""
        decided = set(self.hits) | set(self.remaining)
        hits, needed, _ = _resolve(self.flow, self.plan, self.prepared, roots, decided,
                                   cache=self.cache)
        for new in (*hits, *needed):
            self._touch(new)
        for hit_name, hit in hits.items():
            self.mark_cached(hit_name, hit)
        self._schedule(needed)

    def _schedule(self, needed: Iterable[str]) -> None:
        """Make each needed node wait for its unsettled eager inputs (ready if none)."""
        for m in needed:
            eager = _eager(self.plan, m)
            self.remaining[m] = _waiting(u for u in eager.values()
                                         if u not in self.digests
                                         and not self.run.nodes[u].done)
            for u in set(eager.values()):
                self.consumers[u] += 1
            if m not in self.policies:
                policy = self.policies[m] = policy_for(m, self.plan.nodes[m].options,
                                                       self.options.overrides)
                if not getattr(self.executor, "places_work", False):
                    self.gate.add(m, policy.resources)
            if not self.remaining[m]:
                self.ready.append(m)

    def _touch(self, name: str) -> NodeRecord:
        """The record of ``name``, added to the run (with its code) if the run had none."""
        record = self.run.nodes.get(name)
        if record is None:
            record = self.run.nodes[name] = NodeRecord(name)
            self.run.code[name] = self.prepared[name].fp.components
        return record

    def _traced(self, name: str, outcome: Outcome) -> Outcome:
        """Unwrap a lazy node's result; key it by the inputs it used; record its trace."""
        traced: lazy.Traced = outcome.value
        prep = self.prepared[name]
        self.used[name] = traced.used
        eager = self._input_digests(name, _eager(self.plan, name))
        used = self._input_digests(name, {p: self.plan.upstream[name][p] for p in traced.used})
        trace = [[p, used[p]] for p in traced.used]
        record = self.run.nodes[name]
        if prep.cacheable:
            base = keys.content_key(prep.code, prep.params, eager)
            where = lazy.trace_record_key(base)
            old: LazyTraceRecord | None = self.cache.find_record(where)
            traced_record: LazyTraceRecord = {
                "traces": lazy.with_trace(old["traces"] if old else None, trace)}
            self.cache.record(where, traced_record)
        record.key = keys.content_key(prep.code, prep.params, {**eager, **used})
        outcome.value, outcome.digest = traced.value, None  # the worker hashed the wrapper
        return outcome

    def _submit_map(self, name: str, inputs: Mapping[str, str], kwargs: dict[str, Any],
                    executor: Executor) -> Future[Outcome]:
        """Look every element up; submit one task per element that misses."""
        node, prep = self.plan.nodes[name], self.prepared[name]
        param = node.options.map
        assert param is not None  # only map nodes come here
        key = keys.content_key(prep.code, {p: d for p, d in prep.params.items() if p != param},
                               {p: d for p, d in inputs.items() if p != param})
        try:
            items = mapping.elements(kwargs[param], name, param)
            digests = [hash_value(item) for item in items]
        except (MapError, HashingError) as e:  # the node fails, as if its function had raised
            failed: Future[Outcome] = Future()
            error = e.located(name, param) if isinstance(e, HashingError) else e
            failed.set_result(Outcome(error=error, attempts=1, started=time.time(),
                                      ended=time.time()))
            return failed
        run = mapping.MapRun([mapping.element_key(key, param, d) for d in digests],
                             [None] * len(items), [])
        for index, element_key in enumerate(run.keys):
            try:
                if not prep.cacheable:
                    raise KeyError(element_key)
                run.values[index] = _load(self.cache, element_key)
            except KeyError:
                run.missing.append(index)
        self.maps[name] = run
        self.run.nodes[name].reason += f"; {len(run.missing)} of {len(items)} elements to compute"
        policy = self.policies[name]
        return mapping.gather([executor.submit(Task(f"{name}[{i}]", node.call,
                                                    {**kwargs, param: items[i]}, policy))
                               for i in run.missing])

    def _store_element(self, name: str, key: str, index: int, value: Any,
                       digest: str | None) -> None:
        if not self.prepared[name].cacheable or digest is None:
            return
        meta: ElementMeta = {"digest": digest, "node": name, "element": index,
                             "flow": self.flow.name, "created": time.time(),
                             "lazyflow": __version__}
        _store(self.cache, key, value, meta)

    def _link_trace(self, name: str, key: str, digest: str) -> None:
        trace = self.prepared[name].trace
        if self.untraced and any(up in self.untraced for up in self.plan.upstream[name].values()):
            self.untraced.add(name)
            return
        if trace is not None:
            record: TraceRecord = {"key": key, "digest": digest, "node": name}
            self.cache.record(trace, record)

    def _why(self, name: str, inputs: Mapping[str, str]) -> str:
        prep = self.prepared[name]
        if not self.plan.nodes[name].cache:
            return "cache=False"
        if prep.fp.volatile:
            return prep.fp.volatile_reason
        if not prep.reusable:
            return "deterministic=False"
        previous: LatestRecord | None = self.cache.find_record(
            keys.latest_key(self.flow.name, name), local=True)
        return "; ".join(keys.reasons(previous, prep.fp.components, prep.params, inputs))

    def _digest_of_result(self, name: str, value: Any, *, cacheable: bool) -> str:
        try:
            return hash_value(value)
        except HashingError as e:
            if cacheable:
                raise HashingError(e.type_name, f"node {name!r} returned it: {e.reason}",
                                   node=name) from e
            warnings.warn(f"node {name!r} returned a {e.type_name} that cannot be hashed; "
                          "its dependents are recomputed every time", LazyflowWarning,
                          stacklevel=3)
            return os.urandom(16).hex()

    def _note(self, error: BaseException, name: str) -> None:
        path = " <- ".join(self.plan.path_to_target(name))
        note = f"lazyflow: raised in node {name!r} of flow {self.flow.name!r} (requested via {path})"
        if hasattr(error, "add_note") and note not in getattr(error, "__notes__", ()):
            error.add_note(note)


# --------------------------------------------------------------------------- explain


def explain(flow: Flow, plan: Plan) -> Explanation:
    """A dry run of ``plan``: which needed nodes would hit (and where) or run, and why."""
    prepared = _prepare(plan, _scope(flow.cache))
    hits, needed, _ = _resolve(flow, plan, prepared)
    digests: dict[str, str | None] = {n: h.meta["digest"] for n, h in hits.items()}
    rows: dict[str, ExplanationRow] = {
        n: ExplanationRow(n, "hit", h.tier, "cached" + environment_note(flow.cache, h.meta), h.key,
                          h.meta.get("size"))
        for n, h in hits.items()}
    for name in needed:
        prep = prepared[name]
        inputs = {p: digests.get(up) for p, up in _eager(plan, name).items()}
        key = None
        if None not in inputs.values():
            key = keys.content_key(prep.code, prep.params, inputs)  # type: ignore[arg-type]
            if lazy.lazy_params(plan.nodes[name]):  # replay its traces with what is known
                key = _explain_lazy(flow, plan, prepared, name, key, digests)
            found = flow.cache.lookup(key) if prep.reusable and key else None
            if found is not None:
                digests[name] = found[0]["digest"]
                rows[name] = ExplanationRow(
                    name, "hit", found[1],
                    "cached (same inputs by value)" + environment_note(flow.cache, found[0]), key,
                    found[0].get("size"))
                continue
        digests[name] = None
        if not plan.nodes[name].cache:
            why = "cache=False"
        elif prep.fp.volatile:
            why = prep.fp.volatile_reason
        elif not prep.reusable:
            why = "deterministic=False"
        else:
            previous: LatestRecord | None = flow.cache.find_record(
                keys.latest_key(flow.name, name), local=True)
            why = "; ".join(keys.reasons(previous, prep.fp.components, prep.params, inputs))
        rows[name] = ExplanationRow(name, "run", None, why, key)
    return Explanation(flow.name, plan.targets, tuple(rows[n] for n in plan.order if n in rows))


def _explain_lazy(flow: Flow, plan: Plan, prepared: Mapping[str, _Prepared], name: str,
                  base: str, digests: Mapping[str, str | None]) -> str | None:
    """The key a lazy node's recorded trace vouches for, from digests known without running
    anything (a lazy input counts when its own trace record is a hit); ``None`` otherwise."""
    prep = prepared[name]
    record: LazyTraceRecord | None = flow.cache.find_record(lazy.trace_record_key(base))
    upstream = plan.upstream[name]

    def digest_of(param: str) -> str | None:
        up, trace = upstream[param], prepared[upstream[param]].trace
        if digests.get(up) is None and trace is not None:
            linked: TraceRecord | None = flow.cache.find_record(trace)
            return linked["digest"] if linked else None
        return digests.get(up)

    verdict, used = lazy.replay(record["traces"] if record else (), digest_of)
    if verdict != "hit":
        return None
    eager = {p: digests[up] or "" for p, up in _eager(plan, name).items()}
    return keys.content_key(prep.code, prep.params, {**eager, **used})
