"""Start one ready node: key it, look it up, claim it, hand it its inputs, submit it."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.model.skip as skip
from lazyflow.cache.snapshot import handout
from lazyflow.engine.catching import catches, failed_digests, record_failure, taints
from lazyflow.engine.checks import settle_hit
from lazyflow.engine.events import NodeFinished, NodeStarted
from lazyflow.engine.features import bind
from lazyflow.engine.flight import land, lead
from lazyflow.engine.freshness import ancestry_expiry, expired
from lazyflow.engine.hooks import WAIT
from lazyflow.engine.lease import PARKED, lease, resumed
from lazyflow.engine.prepare import Hit
from lazyflow.engine.settle import link_trace, settle, stop
from lazyflow.engine.state import counted, expected_code, flow_inputs, release_inputs, waiting
from lazyflow.engine.vanished import VANISHED, Vanished, demote, value_of
from lazyflow.engine.why import why
from lazyflow.executors.base import Outcome, Task

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["start"]


def start(s: RunState, name: str) -> Future[Outcome] | None:
    """Settle ``name`` from the cache, skip it, park it, or submit it; return its future
    if it is in flight."""
    features = s.features.get(name)
    if features is None:
        features = s.features[name] = bind(s, name, s.policies[name])
    upstream = counted(s, name)
    record = s.run.nodes[name]
    digests = s.digests
    if s.stopped and _skipped(s, name, upstream):
        return None
    inputs = _input_digests(s, name, upstream)
    if inputs is None:  # an input whose entry vanished is being computed again (vanished.py)
        s.remaining[name] = waiting(up for up in upstream.values() if up not in digests)
        return None
    prep = s.prepared[name]
    key = record.key = keys.content_key(prep.code, prep.params, inputs)
    tainted = bool(s.failures) and taints(s, name, upstream)  # never stored nor looked up
    if prep.reusable and not tainted and not (s.vanished and name in s.vanished):
        if s.leases is None or not resumed(s, name):  # else looked up and claimed before
            if _served(s, name, key, features, upstream):
                return None
            if not lead(s, name, key):
                return None
        if s.plan.nodes[name].options.lease is not None and _leased(s, name, key, upstream):
            return None
    kwargs = flow_inputs(s, name)
    try:
        _take_inputs(s, name, features, upstream, kwargs)
    except Vanished as e:  # compute that input again, in this run; then start over
        land(s, name)
        demote(s, e.node)
        s.remaining[name] = (e.node,)
        return None
    record.reason = VANISHED if s.vanished and name in s.vanished \
        else (s.expired and s.expired.get(name)) \
        or why(s.cache, s.flow.name, name, s.plan.nodes[name], prep, inputs)
    record.status = "running"
    record.started = time.time()
    if s.watched:
        s.emit(NodeStarted(s.run, name))
    return _submit(s, name, features, kwargs)


def _input_digests(s: RunState, name: str, upstream: dict[str, str]) -> dict[str, str] | None:
    """The value digests ``name`` is keyed by (a caught failure's stands for it), or
    ``None`` when an input has none yet."""
    try:
        return {p: s.digests[up] for p, up in upstream.items()}
    except KeyError:
        if s.failures:
            try:
                return failed_digests(s, name, upstream)
            except KeyError:
                pass
        return None


def _skipped(s: RunState, name: str, upstream: dict[str, str]) -> bool:
    """Skip ``name`` when an input of it failed or was skipped (and has no value), unless
    it catches that input's failure."""
    blocked = next((up for up in upstream.values() if up in s.stopped and up not in s.digests
                    and not (s.failures and catches(s, name, up))), None)
    if blocked is None:
        return False
    if blocked in s.failures:  # a consumer that catches receives the failure above it
        record_failure(s, name, s.failures[blocked].error, because=blocked)
    stop(s, name, "skipped", skip.inherited_reason(blocked, s.run.nodes[blocked]))
    release_inputs(s, name)
    if s.watched:
        s.emit(NodeFinished(s.run, s.run.nodes[name]))
    return True


def _served(s: RunState, name: str, key: str, features: tuple[Any, ...],
            upstream: dict[str, str]) -> bool:
    """Settle ``name`` from the cache when its entry is there (early cutoff), or send it
    back to wait when a feature says so; False when it must be computed.

    A *novel* node's entry is looked up on the local tiers only: its trace record
    was found nowhere and each of its inputs is itself novel (a node without inputs
    qualifies), so its entry could be on the remote only if someone had computed
    equal input values from other keys. That chance costs a round trip per
    computed node of every cold chain; what it would find is found anyway on the
    local disk (a first run after editing code upstream), and otherwise the node is
    computed, never served wrong. Whatever it makes, its entry is then written
    create-only (a colleague's equal entry stays).
    """
    lookup: str | None = key
    for feature in features:
        lookup = feature.lookup(s, name, lookup)
        if lookup is WAIT:
            return True
    if lookup is None:
        return False
    novel = not features and s.cold and name in s.cold and \
        all(up in s.novel for up in upstream.values())
    found = s.cache.lookup(lookup, local=True) if novel else s.cache.lookup(lookup)
    if found is None:
        if novel:
            s.novel.add(name)
        return False
    return _hit(s, name, lookup, found, upstream)


def _leased(s: RunState, name: str, key: str, upstream: dict[str, str]) -> bool:
    """Park ``name`` while a colleague holds its lease, or settle it from the entry they
    stored meanwhile; False when it must be computed (``engine/lease.py``)."""
    waited = lease(s, name, key)
    if waited is None:
        return False
    if waited == PARKED:
        return True
    found, holder = waited
    reason = s.run.nodes[name].reason
    s.run.nodes[name].reason = f"computed meanwhile by {holder}"
    if _hit(s, name, key, found, upstream):
        land(s, name)
        return True
    s.run.nodes[name].reason = reason
    return False


def _hit(s: RunState, name: str, lookup: str, found: tuple[Any, str],
         upstream: dict[str, str]) -> bool:
    """Settle ``name`` from ``found``, its entry under ``lookup``; False when the entry is
    older than the node's ``max_age`` (it must be computed)."""
    expires = None
    if s.fresh:  # an entry older than the node's max_age is computed again
        stale = expired(found[0], s.plan.nodes[name].options.max_age)
        if stale is not None:
            s.expired[name] = stale
            return False
        created = found[0].get("created")
        when = float(created) if isinstance(created, (int, float)) else time.time()
        expires = ancestry_expiry(s, name, when, upstream.values())
    s.run.nodes[name].key = lookup
    settle_hit(s, name, Hit(lookup, found[0], found[1], expires))
    link_trace(s, name, lookup, found[0]["digest"])
    release_inputs(s, name)
    return True


def _take_inputs(s: RunState, name: str, features: tuple[Any, ...],
                 upstream: dict[str, str], kwargs: dict[str, Any]) -> None:
    """Fill ``kwargs`` with ``name``'s input values (features supply some their own way);
    :class:`Vanished` when a hit's entry cannot be read any more."""
    supplied: frozenset[str] = frozenset()
    for feature in features:
        supplied = supplied | feature.arguments(s, name, upstream, kwargs)
    values = s.values
    for param, up in s.plan.upstream[name].items():
        if param in supplied:
            continue
        if up in values:
            kwargs[param] = handout(values[up])
        elif s.failures and catches(s, name, up):
            kwargs[param] = s.failures[up]
        else:
            kwargs[param] = value_of(s, up)
    if not s.lazy[name]:
        release_inputs(s, name)  # lazy nodes may be called again: release when settled


def _submit(s: RunState, name: str, features: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Future[Outcome] | None:
    """Run ``name``'s task on its executor; an inline one settles it at once."""
    executor = s.executor
    task = Task(name, s.plan.nodes[name].call, kwargs, s.policies[name], key=s.flying.get(name))
    if not features:
        if s.caps.inline:  # what its submit does, minus a future per node
            settle(s, name, task())
            return None
        if s.caps.elsewhere:
            task.expected_code = expected_code(s, name)
        return executor.submit(task)
    for feature in features:
        executor = feature.executor(s, name, executor)
    for feature in features:
        task = feature.task(s, name, task)
    future = None
    if s.caps.elsewhere:
        task.expected_code = expected_code(s, name)
    for feature in features:
        future = feature.submit(s, name, task, executor)
        if future is not None:
            break
    if future is None:
        if executor is s.executor and s.caps.inline:
            settle(s, name, task())
            return None
        future = executor.submit(task)
    for feature in features:
        feature.submitted(s, name, future)
    return future
