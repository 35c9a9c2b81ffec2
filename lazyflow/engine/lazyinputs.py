"""Lazy inputs as an engine feature: edges the scheduler does not wait for.

A lazy node starts before its lazy inputs are computed and gets a thunk per
lazy parameter (``lazy.py``). Calling one whose value the run has not got
raises ``Demand`` inside the node: the node is sent back to wait, the input
is resolved and scheduled (``demand``), and the node runs again. Its key
covers the lazy inputs it *used*, recorded as a trace under its eager key;
before running, the traces recorded so far are replayed (``replay``): one
whose inputs still have the digests it names vouches for a key to look up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import lazyflow.keys as keys
import lazyflow.model.lazy as lazy
from lazyflow.engine.hooks import WAIT, Feature
from lazyflow.engine.prepare import eager_edges
from lazyflow.engine.schedule import need
from lazyflow.engine.state import input_digests, make_ready, release_inputs, touch
from lazyflow.engine.step import load
from lazyflow.engine.vanished import value_of
from lazyflow.executors.base import Outcome, Task
from lazyflow.records import LazyTraceRecord

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache
    from lazyflow.engine.state import RunState

__all__ = ["LAZY_INPUTS", "demand"]


class LazyInputs(Feature):
    """Hooks of a node with lazy inputs."""

    __slots__ = ()

    def lookup(self, s: RunState, name: str, key: str | None) -> str | None:
        """Replay the node's recorded traces (``WAIT`` when one needs an input first)."""
        return replay(s, name)

    def arguments(self, s: RunState, name: str, upstream: Mapping[str, str],
                  kwargs: dict[str, Any]) -> frozenset[str]:
        """A thunk per lazy parameter."""
        lazy_ps = s.lazy[name]
        for param in lazy_ps:
            kwargs[param] = _thunk(s, name, param, s.plan.upstream[name][param])
        return lazy_ps

    def task(self, s: RunState, name: str, task: Task) -> Task:
        """The call, wrapped to report which thunks it called."""
        task.func = lazy.Call(task.func, s.lazy[name])
        return task

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """Send the node back to wait when it called an input not computed yet; else key
        its result by the inputs it used."""
        if isinstance(outcome.error, lazy.Demand):
            s.run.nodes[name].status = "pending"
            demand(s, name, outcome.error.param)
            return None
        release_inputs(s, name)  # a lazy node may run again: it holds inputs until now
        if isinstance(outcome.value, lazy.Traced):
            outcome = _traced(s, name, outcome)
        return outcome


LAZY_INPUTS = LazyInputs()


def replay(s: RunState, name: str) -> str | None:
    """``WAIT`` when the node must wait for an input a trace names; else the content key a
    recorded trace still vouches for, or ``None`` when none holds."""
    prep = s.prepared[name]
    eager = {p: s.digests[up] for p, up in eager_edges(s.plan)[name].items()}
    record: LazyTraceRecord | None = s.cache.find_record(
        lazy.trace_record_key(keys.content_key(prep.code, prep.params, eager)))
    upstream = s.plan.upstream[name]
    verdict, found = lazy.replay(record["traces"] if record else (),
                                 lambda p: s.digests.get(upstream[p]))
    if verdict == "need":
        demand(s, name, found)
        return WAIT
    if verdict == "hit":
        return keys.content_key(prep.code, prep.params, {**eager, **found})
    return None


def demand(s: RunState, name: str, param: str) -> None:
    """``name`` needs lazy input ``param``: resolve it, schedule it, make ``name`` wait."""
    up = s.plan.upstream[name][param]
    if param not in s.demanded[name]:
        s.demanded[name].add(param)
        s.consumers[up] += 1
    record = touch(s, up)
    if record.status == "pending" and up not in s.remaining:  # undecided: resolve it
        need(s, [up])
    if s.run.nodes[up].done:
        make_ready(s, name)
    else:
        s.remaining[name] = (up,)


def _thunk(s: RunState, name: str, param: str, up: str) -> lazy.Thunk:
    if up in s.values or param in s.demanded[name]:
        return lazy.Thunk(param, value=value_of(s, up))
    if up in s.digests:  # settled (a hit): read it only if called
        return lazy.Thunk(param, has_value=False,
                          loader=_loader(s.cache, s.keys[up], s.digests[up], param))
    return lazy.Thunk(param, has_value=False)


def _loader(cache: Cache, key: str, digest: str, param: str) -> Callable[[], Any]:
    """Loads a lazy input's stored value (of ``digest``, which keys the node) when the node
    calls it; an entry that vanished or was replaced since sends the node back to the
    engine (``Demand``), which computes it again."""
    def load_it() -> Any:
        try:
            return load(cache, key, digest)
        except KeyError:
            raise lazy.Demand(param) from None
    return load_it


def _traced(s: RunState, name: str, outcome: Outcome) -> Outcome:
    """Unwrap a lazy node's result; key it by the inputs it used; record its trace."""
    traced: lazy.Traced = outcome.value
    prep = s.prepared[name]
    s.used[name] = traced.used
    eager = input_digests(s, name, eager_edges(s.plan)[name])
    used = input_digests(s, name, {p: s.plan.upstream[name][p] for p in traced.used})
    trace = [[p, used[p]] for p in traced.used]
    if prep.cacheable:
        base = keys.content_key(prep.code, prep.params, eager)
        where = lazy.trace_record_key(base)
        old: LazyTraceRecord | None = s.cache.find_record(where)
        traced_record: LazyTraceRecord = {
            "traces": lazy.with_trace(old["traces"] if old else None, trace)}
        s.cache.record(where, traced_record)
    s.run.nodes[name].key = keys.content_key(prep.code, prep.params, {**eager, **used})
    outcome.value, outcome.digest = traced.value, None  # the worker hashed the wrapper
    return outcome
