"""Shared-cache execution: workers read inputs from and write results to a cache tier.

Design note
-----------
Policy. When the executor runs nodes on other machines (``shares_cache`` —
Dask) and the flow's cache has a tier those machines can open themselves (a
tier with an ``opener()``: the remote tier), a node whose result is cacheable
runs as a :class:`~lazyflow.engine.step.WorkerStep`: instead of input
*values* it carries the input *keys* and the tier's opener; the worker loads
its inputs from the tier, runs the node, hashes the result, writes it to the
tier with its metadata and returns only the digest and timings. Large values
then never pass through the client: it keeps keys and digests, and loads a
value only when someone asks for it (a target's value, or a node that cannot
run shared).

An input is sent by key only when the tier holds it (written by a worker in
this run, or found there); anything else (a hit held only in memory on the
client, a fallback value) travels by value as usual. A result that cannot be
hashed on the worker comes back by value and is stored by the client.

On an executor that takes graphs (``submits_graphs``), nodes without other
features run as graph steps (``graphs.py``), which do this themselves and,
submitted before their inputs settle, read those from the tier by the keys
their upstream steps wrote; :data:`SHARED` serves the nodes sent one at a
time (a ``timeout=``, say).

State. :class:`Sharing` remembers the keys known to be in the tier for one
run. Rejected: writing results from the client after fetching them (every
byte crosses the network twice), and Dask's own in-memory result passing
(values live in worker memory only, are lost with the worker and are not the
cache).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from lazyflow.cache.base import Meta, Tier, TierOfflineError
from lazyflow.engine.hooks import Feature
from lazyflow.engine.settle import entry_meta
from lazyflow.engine.step import WorkerStep
from lazyflow.executors.base import Capabilities, Task

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["SHARED", "Sharing"]


class Sharing:
    """The client's side of shared-cache execution for one run."""

    def __init__(self, tier: Tier, opener: Callable[[], Tier]) -> None:
        self.tier = tier
        self.opener = opener
        self.known: set[str] = set()

    @classmethod
    def for_run(cls, caps: Capabilities, tiers: list[Tier]) -> Sharing | None:
        """Sharing for a run on an executor with ``caps`` and a cache of ``tiers``, if both
        allow it."""
        if not caps.shares_cache:
            return None
        for tier in tiers:
            opener = getattr(tier, "opener", None)
            if callable(opener):
                return cls(tier, opener())
        return None

    def inputs(self, upstream: Mapping[str, str], keys: Mapping[str, str]
               ) -> dict[str, str] | None:
        """Parameter -> key for the inputs that workers can read from the tier; ``None``
        once the tier is offline (past its deadline): the node then runs by value."""
        if getattr(self.tier, "outage", None) is not None:
            return None  # workers would wait for it too
        shared: dict[str, str] = {}
        for param, up in upstream.items():
            key = keys[up]
            if key not in self.known:
                try:
                    if self.tier.meta(key) is None:
                        continue
                except TierOfflineError:  # it went offline just now
                    return None
                flush = getattr(self.tier, "flush", None)
                if callable(flush):
                    flush()  # it may be a write of ours still on its way
                self.known.add(key)
            shared[param] = key
        return shared

    def stored(self, key: str) -> None:
        """A worker wrote ``key`` to the tier: its consumers may read it there."""
        self.known.add(key)

    def task(self, task: Task, inputs: dict[str, str], key: str, meta: Meta) -> Task:
        """``task`` as a worker step storing its result under ``key``; ``task`` itself when
        the tier holds an entry of a newer encoding there, which a worker's fresh tier
        would write over (its result comes back by value, as when a node cannot run shared)."""
        foreign = getattr(self.tier, "foreign", None)
        if callable(foreign) and foreign(key):
            return task
        return WorkerStep(task.node, task.func, task.kwargs, task.policy, task.hash_result,
                          task.key, opener=self.opener, inputs=inputs, entry=key, meta=meta)


class Shared(Feature):
    """Hooks of a cacheable node when the run's workers share a cache tier."""

    __slots__ = ()

    def arguments(self, s: RunState, name: str, upstream: Mapping[str, str],
                  kwargs: dict[str, Any]) -> frozenset[str]:
        """Name the inputs the tier holds by key: the worker reads them there."""
        assert s.sharing is not None
        shared = s.sharing.inputs(upstream, s.keys)
        if shared is None:
            s.shared_of.pop(name, None)
            return frozenset()
        s.shared_of[name] = shared
        return frozenset(shared)

    def task(self, s: RunState, name: str, task: Task) -> Task:
        """The node as a worker step storing its result in the tier."""
        shared = s.shared_of.pop(name, None)
        if shared is None:  # the tier went offline: run by value
            return task
        assert s.sharing is not None
        upstream = s.plan.upstream[name]
        key = s.run.nodes[name].key
        assert key is not None
        inputs = {p: s.digests[up] for p, up in upstream.items()}
        base = sum(s.costs.get(up, 0.0) for up in set(upstream.values()))
        return s.sharing.task(task, shared, key,
                              entry_meta(s, name, upstream, inputs, "", 0.0, base, 0.0))


SHARED = Shared()
