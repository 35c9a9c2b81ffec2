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
``records`` (one ``NodeRecord`` per node touched).

The engine knows nothing of notebooks: it tells the world through
``events.py``. Executors only *call* functions; hashing, storing and
recording stay here, so every executor gives the same records as the
synchronous reference path.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lazyflow import files, keys, skip
from lazyflow.cache.base import Meta
from lazyflow.cancel import CancelToken
from lazyflow.errors import (
    CacheWarning,
    CancelledError,
    HashingError,
    LazyflowWarning,
    NodeTimeout,
)
from lazyflow.events import GLOBAL, NodeFinished, NodeStarted, RunFinished, RunStarted, Subscriber
from lazyflow.executors import Executor, Outcome, Task, ThreadExecutor, resolve_executor
from lazyflow.fingerprint import Fingerprint, fingerprint
from lazyflow.hashing import hash_value
from lazyflow.policies import policy_for
from lazyflow.run import Explanation, ExplanationRow, NodeRecord, Run

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.graph import Flow, Plan

__all__ = ["RunOptions", "execute", "explain"]

_VERSION = "0.1.0"


@dataclass(slots=True)
class _Prepared:
    """Per-node facts of one request that need no cache."""

    fp: Fingerprint
    params: dict[str, str]
    trace: str | None
    cacheable: bool


@dataclass(slots=True)
class _Hit:
    key: str
    meta: Meta
    tier: str


# --------------------------------------------------------------------------- prepare / resolve


def _prepare(plan: Plan) -> dict[str, _Prepared]:
    prepared: dict[str, _Prepared] = {}
    input_digests: dict[int, str] = {}
    for name in plan.order:
        node = plan.nodes[name]
        fp = fingerprint(node.func, extra=node.version)
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
        cacheable = node.cache and not fp.volatile
        trace: str | None = None
        if cacheable:
            upstream = {p: prepared[up].trace for p, up in plan.upstream[name].items()}
            if None not in upstream.values():
                trace = keys.trace_key(fp.digest, params, upstream)  # type: ignore[arg-type]
        prepared[name] = _Prepared(fp, params, trace, cacheable)
    return prepared


def _resolve(flow: Flow, plan: Plan, prepared: Mapping[str, _Prepared]
             ) -> tuple[dict[str, _Hit], list[str]]:
    """Walk back from the targets; return the hits found and the needed nodes in order."""
    hits: dict[str, _Hit] = {}
    needed: set[str] = set()
    seen: set[str] = set()
    stack = list(plan.targets)
    cache = flow.cache
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        trace = prepared[name].trace
        if trace is not None:
            record = cache.find_record(trace)
            if record is not None:
                found = cache.lookup(record["key"])
                if found is not None:
                    hits[name] = _Hit(record["key"], found[0], found[1])
                    continue
        needed.add(name)
        stack.extend(plan.upstream[name].values())
    return hits, [n for n in plan.order if n in needed]


# --------------------------------------------------------------------------- execute


def _load(cache: Cache, key: str) -> Any:
    """A stored value, with the output files it names put back if deleted (``files.py``)."""
    value, _ = cache.load(key)
    files.restore(value, cache)
    return value


@dataclass
class RunOptions:
    """How to execute a request (everything ``flow.run`` takes besides targets and inputs)."""

    executor: Any = None
    max_workers: int | None = None
    cancel: CancelToken | None = None
    overrides: Mapping[str, Mapping[str, Any]] | None = None
    observers: Sequence[Subscriber] = ()


def execute(flow: Flow, plan: Plan, options: RunOptions | None = None) -> Run:
    """Answer ``plan`` with ``flow``'s cache; return the run.

    ``options.cancel`` is checked before each node starts and woken on while
    waiting; when set, the run stops with :class:`CancelledError`, running
    nodes are stopped where the executor can, and unstarted nodes are marked
    cancelled. Finished nodes stay cached in every case.
    """
    options = options or RunOptions()
    prepared = _prepare(plan)
    hits, needed = _resolve(flow, plan, prepared)
    touched = hits.keys() | set(needed)
    records = {n: NodeRecord(n) for n in plan.order if n in touched}
    executor, owned = resolve_executor(options.executor, options.max_workers)
    run = Run(flow.name, plan.targets, records,
              inputs={p: d for n in plan.order for p, d in prepared[n].params.items()},
              executor=executor.name, _loader=lambda key: _load(flow.cache, key))
    state = _State(flow, plan, prepared, run, hits, needed, options, executor)
    try:
        state.emit(RunStarted(run))
        for name, hit in hits.items():
            state.mark_cached(name, hit)
        state.loop()
    except BaseException as e:
        state.abort(e)
        raise
    finally:
        if owned:
            executor.shutdown()
        state.shutdown()
        run.ended = time.time()
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
        self.cache = flow.cache
        self.plan = plan
        self.prepared = prepared
        self.run = run
        self.options = options
        self.executor = executor
        self.timed: Executor | None = None  # a thread for sync nodes with a timeout
        self.hits = dict(hits)
        self.needed = needed
        self.digests: dict[str, str] = {n: h.meta["digest"] for n, h in hits.items()}
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {n: h.key for n, h in hits.items()}
        # compute seconds that produced each value, its ancestry included ("time saved")
        self.costs: dict[str, float] = {}
        needed_set = set(needed)
        self.remaining = {n: sum(1 for up in set(plan.upstream[n].values()) if up in needed_set)
                          for n in needed}
        self.consumers = {n: sum(1 for d in plan.downstream[n] if d in needed_set)
                          for n in plan.order}
        self.running: dict[Future[Outcome], str] = {}
        self.deadlines: dict[Future[Outcome], float] = {}
        self.fatal: BaseException | None = None
        # values that stand in for a failure (fallbacks) and everything computed from them:
        # never linked by trace key, so the next request retries the failed node
        self.untraced: set[str] = set()
        self.policies = {n: policy_for(n, plan.nodes[n].options, options.overrides)
                         for n in needed}
        self.buses = [bus for bus in (flow.events, GLOBAL) if bus]
        self.observers = tuple(options.observers)

    def emit(self, event: Any) -> None:
        for bus in self.buses:
            bus.emit(event)
        for observer in self.observers:
            observer(event)

    # ----------------------------------------------------------------- the loop

    def loop(self) -> None:
        """Start ready nodes while workers are free; settle them as they finish."""
        ready = deque(n for n in self.needed if self.remaining[n] == 0)
        running = self.running
        cancel = self.options.cancel
        while (ready and self.fatal is None) or running:
            self._check_cancel()
            while ready and self.fatal is None and len(running) < self.executor.max_workers:
                self._check_cancel()
                name = ready.popleft()
                future = self.start(name)
                if future is None:
                    self._settled(name, ready)
                elif future.done():
                    self._complete(name, future, ready)
                else:
                    running[future] = name
            if not running:
                continue
            waiting: set[Future[Any]] = set(running)
            if cancel is not None:
                waiting.add(cancel.future)
            timeout = (max(0.0, min(self.deadlines.values()) - time.monotonic())
                       if self.deadlines else None)
            done, _ = wait(waiting, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                if future in running:
                    self._complete(running.pop(future), future, ready)
            self._expire_deadlines(ready)
        if self.fatal is not None:
            raise self.fatal

    def start(self, name: str) -> Future[Outcome] | None:
        """Settle ``name`` from the cache, skip it, or submit it; return its future if submitted."""
        prep = self.prepared[name]
        upstream = self.plan.upstream[name]
        record = self.run.nodes[name]
        blocked = next((up for up in upstream.values()
                        if self.run.nodes[up].status in ("failed", "skipped")
                        and up not in self.digests), None)
        if blocked is not None:
            record.status = "skipped"
            record.reason = skip.inherited_reason(blocked, self.run.nodes[blocked])
            self._release_inputs(name)
            self.emit(NodeFinished(self.run, record))
            return None
        inputs = {p: self.digests[up] for p, up in upstream.items()}
        key = keys.content_key(prep.fp.digest, prep.params, inputs)
        record.key = key
        if prep.cacheable:
            found = self.cache.lookup(key)
            if found is not None:
                self.mark_cached(name, _Hit(key, found[0], found[1]))
                self._link_trace(name, key, found[0]["digest"])
                self._release_inputs(name)
                return None
        kwargs = dict(self.plan.params[name])
        for param, up in upstream.items():
            kwargs[param] = self._value_of(up)
        self._release_inputs(name)
        record.reason = self._why(name, inputs)
        record.status = "running"
        record.started = time.time()
        self.emit(NodeStarted(self.run, name))
        node = self.plan.nodes[name]
        policy = self.policies[name]
        executor = self.executor
        if policy.timeout is not None and executor.name == "sync":
            if self.timed is None:
                self.timed = ThreadExecutor(max_workers=1)
            executor = self.timed
        future = executor.submit(Task(name, node.func, kwargs, policy))
        if policy.timeout is not None:
            self.deadlines[future] = time.monotonic() + policy.timeout
        return future

    def _complete(self, name: str, future: Future[Outcome], ready: deque[str]) -> None:
        self.deadlines.pop(future, None)
        try:
            outcome = future.result()
        except BaseException as e:  # the executor itself failed (a dead worker, say)
            outcome = Outcome(error=e, attempts=1, started=time.time(), ended=time.time())
        self.settle(name, outcome)
        self._settled(name, ready)

    def settle(self, name: str, outcome: Outcome) -> None:
        """Record a finished task: store its value, or apply the node's error policy."""
        record = self.run.nodes[name]
        record.attempts = outcome.attempts
        record.duration = outcome.duration
        if outcome.started:
            record.started = outcome.started
        record.ended = outcome.ended or time.time()
        if outcome.error is None:
            self.finish(name, outcome.value, outcome.duration, outcome.digest)
            return
        error = outcome.error
        if isinstance(error, skip.Skip):
            record.status = "skipped"
            record.reason = error.reason
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
        record.status = "failed"
        record.reason = f"{type(error).__name__}: {error}"
        self.emit(NodeFinished(self.run, record))
        if policy.on_error == "raise" and self.fatal is None:
            self.fatal = error

    def finish(self, name: str, value: Any, duration: float, digest: str | None,
               *, store: bool = True) -> None:
        """Record a computed value: digest, store, trace, events."""
        prep = self.prepared[name]
        record = self.run.nodes[name]
        if digest is None:
            digest = self._digest_of_result(name, value, cacheable=prep.cacheable and store)
        record.duration = duration
        record.ended = record.ended or time.time()
        record.digest = digest
        record.status = "completed"
        self.digests[name] = digest
        key = record.key
        assert key is not None
        self.keys[name] = key
        cost = duration + sum(self.costs.get(up, 0.0)
                              for up in set(self.plan.upstream[name].values()))
        self.costs[name] = cost
        if self.consumers[name] or name in self.plan.targets:
            self.values[name] = value
        if name in self.plan.targets:
            self.run.values[name] = value
        if prep.cacheable and store:
            inputs = {p: self.digests[up] for p, up in self.plan.upstream[name].items()}
            meta: Meta = {
                "digest": digest, "node": name, "flow": self.flow.name,
                "created": record.ended, "duration": duration, "cost": cost,
                "lazyflow": _VERSION,
                "params": prep.params, "inputs": {p: self.keys[up] for p, up in
                                                  self.plan.upstream[name].items()},
                "input_digests": inputs, "fingerprint": dict(prep.fp.components),
                "pid": os.getpid(),
            }
            files.capture(value, self.cache)
            self.cache.store(key, value, meta)
            stored = self.cache.lookup(key)
            record.size = stored[0].get("size") if stored else None
            self._link_trace(name, key, digest)
            self.cache.record(keys.latest_key(self.flow.name, name),
                              {"digest": digest, "key": key, "params": prep.params,
                               "inputs": inputs, "fingerprint": dict(prep.fp.components)})
        self.emit(NodeFinished(self.run, record))

    def mark_cached(self, name: str, hit: _Hit) -> None:
        record = self.run.nodes[name]
        record.status = "cached"
        record.tier = hit.tier
        record.key = hit.key
        record.digest = hit.meta["digest"]
        record.size = hit.meta.get("size")
        record.saved = float(hit.meta.get("cost", hit.meta.get("duration", 0.0)))
        self.costs[name] = record.saved
        record.started = record.ended = time.time()
        self.digests[name] = hit.meta["digest"]
        self.keys[name] = hit.key
        self.hits[name] = hit
        if name in self.plan.targets:
            self.run.values[name] = self._value_of(name)
        self.emit(NodeFinished(self.run, record))

    def abort(self, error: BaseException) -> None:
        """Stop: running nodes are stopped where possible; unsettled ones are marked."""
        interrupted = isinstance(error, (KeyboardInterrupt, CancelledError))
        self.run.status = "cancelled" if interrupted else "failed"
        self.run.error = error
        for future in self.running:
            self.executor.abandon(future)
        failed = next((n for n, r in self.run.nodes.items() if r.status == "failed"), None)
        for record in self.run.nodes.values():
            if not record.done:
                record.status = "cancelled" if interrupted else "skipped"
                record.reason = (f"run cancelled: {error}" if interrupted
                                 else f"not run: node {failed!r} failed" if failed
                                 else f"not run: {type(error).__name__}")
                self.emit(NodeFinished(self.run, record))

    def shutdown(self) -> None:
        """Release the helper thread used for timed nodes on the sync executor."""
        if self.timed is not None:
            self.timed.shutdown()

    # ----------------------------------------------------------------- helpers

    def _check_cancel(self) -> None:
        cancel = self.options.cancel
        if cancel is not None and cancel.cancelled:
            raise CancelledError(f"run of {list(self.plan.targets)} cancelled "
                                 f"({cancel.reason}); finished nodes stay cached")

    def _settled(self, name: str, ready: deque[str]) -> None:
        for d in self.plan.downstream[name]:
            if d in self.remaining:
                self.remaining[d] -= 1
                if self.remaining[d] == 0:
                    ready.append(d)

    def _expire_deadlines(self, ready: deque[str]) -> None:
        now = time.monotonic()
        for future, deadline in list(self.deadlines.items()):
            if deadline > now or future.done():
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
        if name in self.values:
            return self.values[name]
        hit = self.hits[name]
        try:
            value = _load(self.cache, hit.key)
        except KeyError:
            value = self._recompute(name)
        if self.consumers[name] > 1 or name in self.plan.targets:
            self.values[name] = value
        return value

    def _recompute(self, name: str) -> Any:
        """An entry vanished between lookup and load (evicted, corrupt): compute it again."""
        warnings.warn(f"cache entry of node {name!r} vanished before it could be read; "
                      "recomputing it", CacheWarning, stacklevel=2)
        sub = execute(self.flow, self.flow.plan(name, self._flow_inputs()))
        return sub[name]

    def _flow_inputs(self) -> dict[str, Any]:
        return {p: v for params in self.plan.params.values() for p, v in params.items()}

    def _release_inputs(self, name: str) -> None:
        for up in set(self.plan.upstream[name].values()):
            self.consumers[up] -= 1
            if self.consumers[up] <= 0 and up not in self.plan.targets:
                self.values.pop(up, None)

    def _link_trace(self, name: str, key: str, digest: str) -> None:
        trace = self.prepared[name].trace
        if any(up in self.untraced for up in self.plan.upstream[name].values()):
            self.untraced.add(name)
            return
        if trace is not None:
            self.cache.record(trace, {"key": key, "digest": digest, "node": name})

    def _why(self, name: str, inputs: Mapping[str, str]) -> str:
        prep = self.prepared[name]
        if not self.plan.nodes[name].cache:
            return "cache=False"
        if prep.fp.volatile:
            return "code reads a value that cannot be hashed"
        previous = self.cache.find_record(keys.latest_key(self.flow.name, name))
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
    prepared = _prepare(plan)
    hits, needed = _resolve(flow, plan, prepared)
    digests: dict[str, str | None] = {n: h.meta["digest"] for n, h in hits.items()}
    rows: dict[str, ExplanationRow] = {
        n: ExplanationRow(n, "hit", h.tier, "cached", h.key, h.meta.get("size"))
        for n, h in hits.items()}
    for name in needed:
        prep = prepared[name]
        inputs = {p: digests.get(up) for p, up in plan.upstream[name].items()}
        key = None
        if None not in inputs.values():
            key = keys.content_key(prep.fp.digest, prep.params, inputs)  # type: ignore[arg-type]
            found = flow.cache.lookup(key) if prep.cacheable else None
            if found is not None:
                digests[name] = found[0]["digest"]
                rows[name] = ExplanationRow(name, "hit", found[1], "cached (same inputs by value)",
                                            key, found[0].get("size"))
                continue
        digests[name] = None
        if not plan.nodes[name].cache:
            why = "cache=False"
        elif prep.fp.volatile:
            why = "code reads a value that cannot be hashed"
        else:
            previous = flow.cache.find_record(keys.latest_key(flow.name, name))
            why = "; ".join(keys.reasons(previous, prep.fp.components, prep.params, inputs))
        rows[name] = ExplanationRow(name, "run", None, why, key)
    return Explanation(flow.name, plan.targets, tuple(rows[n] for n in plan.order if n in rows))
