"""Settle a node: a computed value is digested, stored and traced; a hit or a failure is
recorded; events tell the world."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.model.lazy as lazy
import lazyflow.model.skip as skip
from lazyflow._version import __version__
from lazyflow.cache.snapshot import handout, shareable
from lazyflow.engine.ancestry import computed
from lazyflow.engine.catching import caught_by_all, record_failure
from lazyflow.engine.events import NodeFinished
from lazyflow.engine.flight import WAITING, land
from lazyflow.engine.freshness import ancestry_expiry
from lazyflow.engine.lease import settled as lease_settled
from lazyflow.engine.moved import moved_since_keyed
from lazyflow.engine.state import counted, input_digests
from lazyflow.engine.step import store
from lazyflow.engine.why import note_environment, recorded_environment
from lazyflow.errors import HashingError, LazyflowWarning, warn
from lazyflow.executors.base import Outcome
from lazyflow.keys.hashing import hash_value
from lazyflow.records import EntryMeta, LatestRecord, TraceRecord
from lazyflow.run import EARLIER, NodeRecord, Status

if TYPE_CHECKING:
    from lazyflow.engine.prepare import Hit
    from lazyflow.engine.state import RunState

__all__ = ["NOT_NEEDED", "entry_meta", "finish", "link_trace", "mark_cached", "mark_unneeded",
           "settle", "stop"]

CHANGED = "; the new value differs from the vanished one, so its dependents were recomputed"
NOT_NEEDED = "not needed"
"""The reason of a node behind a lazy input that no node called (``mark_unneeded``)."""
_PID = [os.getpid()]  # os.getpid() is a system call: it cost ~1 µs per stored node
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def settle(s: RunState, name: str, outcome: Outcome) -> None:
    """Record a finished task; then wake the requests waiting for its key, which take
    the stored value, or compute it themselves when there is none."""
    try:
        features = s.features.get(name)
        if features:
            for feature in features:
                changed = feature.outcome(s, name, outcome)
                if changed is None:
                    return  # the feature settled it (sent back to wait, say)
                outcome = changed
        _record_outcome(s, name, outcome)
    finally:
        if s.flying:
            land(s, name)
        if s.leases is not None:  # stop renewing its lease
            lease_settled(s, name)
        if s.kept:
            s.kept.pop(name, None)


def _record_outcome(s: RunState, name: str, outcome: Outcome) -> None:
    """Store a task's value, or apply the node's error policy."""
    record = s.run.nodes[name]
    record.attempts = outcome.attempts
    record.duration = outcome.duration
    if outcome.metrics:
        record.metrics = outcome.metrics
    record.cpu, record.peak_memory = outcome.cpu, outcome.peak_memory
    if outcome.started:
        record.started = outcome.started
    record.ended = outcome.ended or time.time()
    if outcome.error is None:
        tainted = bool(s.tainted) and name in s.tainted
        if tainted:
            record.reason += "; not cached: computed from a caught failure"
        finish(s, name, outcome.value, outcome.duration, outcome.digest, keep=not tainted,
               stored=outcome.stored, whole=outcome.whole, created=outcome.created)
        return
    error = outcome.error
    if isinstance(error, lazy.Demand):  # a lazy node's own demands never get here
        error = lazy.stray_demand(name, error)
    if isinstance(error, skip.Skip):
        stop(s, name, "skipped", error.reason)
        if s.watched:
            s.emit(NodeFinished(s.run, record))
        return
    _note(s, error, name)
    policy = s.policies[name]
    record.error = error
    if policy.on_error == "fallback":
        s.untraced.add(name)
        # a copy per run: a consumer (or the caller) changing it in place must not change
        # what the next failure falls back to
        finish(s, name, handout(shareable(policy.fallback)), outcome.duration, None,
               keep=False)
        record.status = "fallback"  # a value, but not the node's own (run.STATUSES)
        record.reason = f"fallback after {type(error).__name__}: {error}"
        return
    stop(s, name, "failed", f"{type(error).__name__}: {error}")
    record_failure(s, name, error)
    record.caught = caught_by_all(s, name)
    if record.caught:
        record.reason += "; caught by " + ", ".join(
            repr(d) for d in dict.fromkeys(s.plan.downstream[name]))
    if s.watched:
        s.emit(NodeFinished(s.run, record))
    if policy.on_error == "raise" and s.fatal is None and not record.caught:
        s.fatal = error


def finish(s: RunState, name: str, value: Any, duration: float, digest: str | None,
           *, keep: bool = True, stored: bool = False,
           whole: tuple[float, dict[str, float] | None] | None = None,
           created: float | None = None) -> None:
    """Record a computed value: digest, store, trace, events.

    ``keep=False``: a value standing in for a failure, never stored.
    ``stored``: a worker already wrote the value to the shared tier and sent
    none back; it is loaded from the cache if anyone here needs it.
    ``whole``: what the value cost in all, when more than this call (a map's
    recalled elements): what its entry records, and what this run saved of it.
    ``created``: when its oldest part was computed, when before this call (a map's
    recalled elements): its entry's age, and its expiry, count from then.
    """
    prep = s.prepared[name]
    record = s.run.nodes[name]
    if digest is None:
        digest = _digest_of_result(name, value, cacheable=prep.cacheable and keep)
    record.duration = duration
    record.ended = record.ended or time.time()
    created = record.ended if created is None else min(created, record.ended)
    record.digest = digest
    record.status = "completed"
    if s.vanished and s.vanished.get(name, digest) != digest:
        # dependents not started yet take the new digest (start keys them by digests);
        # those running with the old value keep the key they were started with (kept)
        record.reason += CHANGED
    s.digests[name] = digest
    key = record.key
    assert key is not None
    s.keys[name] = key
    upstream = counted(s, name, keyed=True) if s.lazy[name] else s.plan.upstream[name]
    own, metrics = (duration, record.metrics) if whole is None else whole
    if whole is not None:
        _saved_earlier(record, name, whole)
    if len(upstream) == 1:  # sum() of one cost, without a set and a generator
        cost = own + s.costs.get(next(iter(upstream.values())), 0.0)
    else:
        cost = own + sum(s.costs.get(up, 0.0) for up in set(upstream.values()))
    s.costs[name] = cost
    s.ancestry[name] = computed(s, name, own, metrics, set(upstream.values()))
    if s.fresh:
        expires = ancestry_expiry(s, name, created, upstream.values())
        if expires is not None:
            s.expires[name] = expires
    if not stored:
        readers = s.consumers[name] + (name in s.targets)
        # several readers (consumers, the caller) each get their own copy: one changing
        # its value in place must not change what another computes with (snapshot.py)
        kept = shareable(value) if readers > 1 else value
        if readers:
            s.values[name] = kept
        if name in s.targets:
            s.run.values[name] = handout(kept)
    if prep.cacheable and keep and not stored:
        moved = s.moved.pop(name) if name in s.moved else moved_since_keyed(s, name)
        if moved is not None:
            record.reason += f"; not cached: {moved}"
            keep = False
            # its trace key is the keyed state's: no dependent may link a trace through it
            s.untraced.add(name)
    if prep.cacheable and keep:
        _store_computed(s, name, value, key, digest, upstream, cost, created, stored=stored)
    if s.watched:
        s.emit(NodeFinished(s.run, record))


def _saved_earlier(record: NodeRecord, name: str, whole: tuple[float, dict[str, float] | None]
                   ) -> None:
    """What reusing earlier results of a value computed now saved: its whole cost less
    this call's, counted by the run under its own name (``run.Run.time_saved``)."""
    seconds = whole[0] - record.duration
    metrics = {m: v - (record.metrics or {}).get(m, 0) for m, v in (whole[1] or {}).items()}
    metrics = {m: v for m, v in metrics.items() if v}
    if seconds > 0 or metrics:
        record.saved = max(seconds, 0.0)
        record.saved_from = {f"{name}{EARLIER}": [record.saved, metrics] if metrics
                             else [record.saved]}


def _store_computed(s: RunState, name: str, value: Any, key: str, digest: str,
                    upstream: Mapping[str, str], cost: float, created: float, *,
                    stored: bool) -> None:
    """Store a computed value (unless a worker did), link its trace, record it as latest."""
    prep = s.prepared[name]
    record = s.run.nodes[name]
    inputs = input_digests(s, name, upstream) if s.kept \
        else {p: s.digests[up] for p, up in upstream.items()}
    if stored:  # by a worker: consumers here load it from the cache
        found = s.cache.lookup(key)
        record.size = found[0].get("size") if found else None
        if found is not None:
            assert s.sharing is not None
            s.sharing.stored(key)
    else:  # the size the fastest tier accounts, as a lookup would report it
        kept = store(s.cache, key, value, entry_meta(
            s, name, upstream, inputs, digest, record.duration, cost, created))
        if kept is None:  # that tier does not say: ask
            found = s.cache.lookup(key)
            kept = found[0] if found else None
        record.size = kept.get("size") if kept else None
    link_trace(s, name, key, digest)
    latest: LatestRecord = {"digest": digest, "key": key, "params": prep.params,
                            "input_digests": inputs, "fingerprint": prep.fp.components}
    s.cache.record(keys.latest_key(s.flow.name, name), latest, local=True)


def entry_meta(s: RunState, name: str, upstream: Mapping[str, str], inputs: Mapping[str, str],
               digest: str, duration: float, cost: float, created: float) -> EntryMeta:
    """An entry's metadata; ``inputs`` are the value digests of ``upstream``."""
    prep = s.prepared[name]
    known = s.keys
    kept = s.kept.get(name) if s.kept else None
    meta: EntryMeta = {
        "digest": digest, "node": name, "flow": s.flow.name, "created": created,
        "duration": duration, "cost": cost, "lazyflow": __version__, "params": prep.params,
        "inputs": {p: kept[up][1] if kept and up in kept else known[up]
                   for p, up in upstream.items()},
        "input_digests": inputs, "fingerprint": prep.fp.components, "pid": _PID[0],
        "env": recorded_environment(s.cache)}
    if prep.checks is not None:
        meta["checks"] = prep.checks
    record = s.run.nodes[name]
    if record.metrics:
        meta["metrics"] = record.metrics
    ancestry = s.ancestry.get(name)
    if ancestry is not None:
        meta["ancestry"] = ancestry
    return meta


def link_trace(s: RunState, name: str, key: str, digest: str) -> None:
    """Point ``name``'s trace key at its entry, unless a fallback is in its ancestry or the
    node has no upstream node (``Prepared.direct``: found by its entry's own key)."""
    trace = s.prepared[name].trace
    if s.prepared[name].direct:
        return
    if s.untraced and any(up in s.untraced for up in s.plan.upstream[name].values()):
        s.untraced.add(name)
        return
    if trace is not None:
        record: TraceRecord = {"key": key, "digest": digest, "node": name}
        if s.fresh and name in s.expires:
            record["expires"] = s.expires[name]
        s.cache.record(trace, record)


def mark_cached(s: RunState, name: str, hit: Hit) -> None:
    """Settle ``name`` as a hit; a target's value is loaded when the run ends."""
    record = s.run.nodes[name]
    record.status = "cached"
    if record.reason is WAITING:
        record.reason = "computed meanwhile by another request"
    record.tier = hit.tier
    record.key = hit.key
    record.digest = hit.meta["digest"]
    record.size = hit.meta.get("size")
    record.saved = float(hit.meta.get("cost") or hit.meta.get("duration") or 0.0)
    note_environment(record, s.cache, hit.meta)
    metrics = hit.meta.get("metrics")
    if metrics:
        record.metrics = dict(metrics)
    ancestry = hit.meta.get("ancestry")
    s.ancestry[name] = record.saved_from = ancestry if isinstance(ancestry, dict) else None
    if record.saved_from is not None:  # each node of its ancestry once (ancestry.py)
        record.saved = sum(float(cost[0]) for cost in record.saved_from.values())
    s.costs[name] = record.saved
    if s.fresh and hit.expires is not None:
        s.expires[name] = hit.expires
    record.started = record.ended = time.time()
    s.digests[name] = hit.meta["digest"]
    s.keys[name] = hit.key
    s.hits[name] = hit
    if s.watched:
        s.emit(NodeFinished(s.run, record))


def mark_unneeded(s: RunState) -> None:
    """Nodes behind lazy inputs that no node called end skipped, "not needed"."""
    for record in s.run.nodes.values():
        if record.status == "pending":
            record.status = "skipped"
            record.reason = NOT_NEEDED
            if s.watched:
                s.emit(NodeFinished(s.run, record))


def stop(s: RunState, name: str, status: Status, reason: str) -> None:
    """Mark ``name`` failed or skipped: its consumers are then skipped in turn."""
    record = s.run.nodes[name]
    record.status = status
    record.reason = reason
    s.stopped.add(name)


def _digest_of_result(name: str, value: Any, *, cacheable: bool) -> str:
    try:
        return hash_value(value)
    except HashingError as e:
        if cacheable:
            raise HashingError(e.type_name, f"node {name!r} returned it: {e.reason}",
                               node=name) from e
        warn(f"node {name!r} returned a {e.type_name} that cannot be hashed; "
                      "its dependents are recomputed every time", LazyflowWarning)
        return os.urandom(16).hex()


def _note(s: RunState, error: BaseException, name: str) -> None:
    path = " <- ".join(s.plan.path_to_target(name))
    note = f"lazyflow: raised in node {name!r} of flow {s.flow.name!r} (requested via {path})"
    if hasattr(error, "add_note") and note not in getattr(error, "__notes__", ()):
        error.add_note(note)
