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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lazyflow import keys
from lazyflow.cache.base import Meta
from lazyflow.cancel import CancelToken
from lazyflow.errors import CacheWarning, CancelledError, HashingError, LazyflowWarning
from lazyflow.events import GLOBAL, NodeFinished, NodeStarted, RunFinished, RunStarted
from lazyflow.fingerprint import Fingerprint, fingerprint
from lazyflow.hashing import hash_value
from lazyflow.run import Explanation, ExplanationRow, NodeRecord, Run

if TYPE_CHECKING:
    from lazyflow.graph import Flow, Plan

__all__ = ["execute", "explain"]

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


def execute(flow: Flow, plan: Plan, *, cancel: CancelToken | None = None) -> Run:
    """Answer ``plan`` with ``flow``'s cache and the synchronous executor; return the run.

    ``cancel`` is checked before each node starts; when set, the run stops
    with :class:`CancelledError` and unstarted nodes are marked cancelled.
    """
    prepared = _prepare(plan)
    hits, needed = _resolve(flow, plan, prepared)
    touched = hits.keys() | set(needed)
    records = {n: NodeRecord(n) for n in plan.order if n in touched}
    run = Run(flow.name, plan.targets, records,
              inputs={p: d for n in plan.order for p, d in prepared[n].params.items()},
              _loader=lambda key: flow.cache.load(key)[0])
    state = _State(flow, plan, prepared, run, hits, needed, cancel)
    state.emit(RunStarted(run))
    for name, hit in hits.items():
        state.mark_cached(name, hit)
    try:
        state.loop()
    except BaseException as e:
        state.abort(e)
        raise
    finally:
        run.ended = time.time()
        flow.last_run = run
        if run.status == "running":
            run.status = "completed"
        state.emit(RunFinished(run))
    return run


class _State:
    """The mutable state of one run, and the steps that move it forward."""

    def __init__(self, flow: Flow, plan: Plan, prepared: Mapping[str, _Prepared], run: Run,
                 hits: Mapping[str, _Hit], needed: list[str],
                 cancel: CancelToken | None) -> None:
        self.flow = flow
        self.cancel = cancel
        self.cache = flow.cache
        self.plan = plan
        self.prepared = prepared
        self.run = run
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
        self.observed = bool(flow.events) or bool(GLOBAL)

    def emit(self, event: Any) -> None:
        if self.observed:
            self.flow.events.emit(event)
            GLOBAL.emit(event)

    # ----------------------------------------------------------------- the loop

    def loop(self) -> None:
        ready = deque(n for n in self.needed if self.remaining[n] == 0)
        while ready:
            if self.cancel is not None and self.cancel.cancelled:
                raise CancelledError(f"run of {list(self.plan.targets)} cancelled "
                                     f"({self.cancel.reason}); finished nodes stay cached")
            name = ready.popleft()
            self.step(name)
            for d in self.plan.downstream[name]:
                if d in self.remaining:
                    self.remaining[d] -= 1
                    if self.remaining[d] == 0:
                        ready.append(d)

    def step(self, name: str) -> None:
        """Settle one needed node whose upstream nodes are all settled."""
        prep = self.prepared[name]
        upstream = self.plan.upstream[name]
        inputs = {p: self.digests[up] for p, up in upstream.items()}
        key = keys.content_key(prep.fp.digest, prep.params, inputs)
        record = self.run.nodes[name]
        record.key = key
        if prep.cacheable:
            found = self.cache.lookup(key)
            if found is not None:
                self.mark_cached(name, _Hit(key, found[0], found[1]))
                self._link_trace(name, key, found[0]["digest"])
                self._release_inputs(name)
                return
        kwargs = dict(self.plan.params[name])
        for param, up in upstream.items():
            kwargs[param] = self._value_of(up)
        self._release_inputs(name)
        record.reason = self._why(name, inputs)
        record.status = "running"
        record.started = time.time()
        self.emit(NodeStarted(self.run, name))
        t0 = time.perf_counter()
        record.attempts += 1
        try:
            value = self.plan.nodes[name].func(**kwargs)
        except BaseException as e:
            record.duration = time.perf_counter() - t0
            record.ended = time.time()
            record.status = "failed"
            record.error = e
            self._note(e, name)
            self.emit(NodeFinished(self.run, record))
            raise
        duration = time.perf_counter() - t0
        self.finish(name, value, duration, inputs)

    def finish(self, name: str, value: Any, duration: float, inputs: Mapping[str, str]) -> None:
        """Record a computed value: digest, store, trace, events."""
        prep = self.prepared[name]
        record = self.run.nodes[name]
        digest = self._digest_of_result(name, value)
        record.duration = duration
        record.ended = time.time()
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
        if prep.cacheable:
            meta: Meta = {
                "digest": digest, "node": name, "flow": self.flow.name,
                "created": record.ended, "duration": duration, "cost": cost,
                "lazyflow": _VERSION,
                "params": prep.params, "inputs": {p: self.keys[up] for p, up in
                                                  self.plan.upstream[name].items()},
                "input_digests": dict(inputs), "fingerprint": dict(prep.fp.components),
                "pid": os.getpid(),
            }
            self.cache.store(key, value, meta)
            stored = self.cache.lookup(key)
            record.size = stored[0].get("size") if stored else None
            self._link_trace(name, key, digest)
            self.cache.record(keys.latest_key(self.flow.name, name),
                              {"digest": digest, "key": key, "params": prep.params,
                               "inputs": dict(inputs), "fingerprint": dict(prep.fp.components)})
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
        """Stop: nodes not yet settled become skipped (or cancelled on interrupt)."""
        interrupted = isinstance(error, (KeyboardInterrupt, CancelledError))
        self.run.status = "cancelled" if interrupted else "failed"
        self.run.error = error
        failed = next((n for n, r in self.run.nodes.items() if r.status == "failed"), None)
        for record in self.run.nodes.values():
            if not record.done:
                record.status = "cancelled" if interrupted else "skipped"
                record.reason = (f"run cancelled: {error}" if interrupted
                                 else f"not run: node {failed!r} failed" if failed
                                 else f"not run: {type(error).__name__}")
                self.emit(NodeFinished(self.run, record))

    # ----------------------------------------------------------------- helpers

    def _value_of(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        hit = self.hits[name]
        try:
            value, _ = self.cache.load(hit.key)
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

    def _digest_of_result(self, name: str, value: Any) -> str:
        try:
            return hash_value(value)
        except HashingError as e:
            if self.prepared[name].cacheable:
                raise HashingError(e.type_name, f"node {name!r} returned it: {e.reason}",
                                   node=name) from e
            warnings.warn(f"node {name!r} returned a {e.type_name} that cannot be hashed; "
                          "its dependents are recomputed every time", LazyflowWarning,
                          stacklevel=3)
            return os.urandom(16).hex()

    def _note(self, error: BaseException, name: str) -> None:
        path = " <- ".join(self.plan.path_to_target(name))
        note = f"lazyflow: raised in node {name!r} of flow {self.flow.name!r} (requested via {path})"
        if hasattr(error, "add_note"):
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
