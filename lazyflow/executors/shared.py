"""Shared-cache execution: workers read inputs from and write results to a cache tier.

Design note
-----------
Policy. When the executor runs nodes on other machines (``shares_cache`` —
Dask) and the flow's cache has a tier those machines can open themselves (a
tier with an ``opener()``: the remote tier), a node whose result is cacheable
is sent as a :class:`SharedTask`: instead of input *values* it carries the
input *keys* and the tier's opener; the worker loads its inputs from the
tier, runs the node, hashes the result, writes it to the tier with its
metadata and returns only the digest and timings. Large values then never
pass through the client: it keeps keys and digests, and loads a value only
when someone asks for it (a target's value, or a node that cannot run shared).

An input is sent by key only when the tier holds it (written by a worker in
this run, or found there); anything else (a hit held only in memory on the
client, a fallback value) travels by value as usual. A result that cannot be
hashed on the worker comes back by value and is stored by the client.

State. :class:`Sharing` remembers the keys known to be in the tier for one
run. Workers keep one opened tier per opener (``_OPENED``), so a worker opens
a filesystem connection once, not per task. Rejected: writing results from
the client after fetching them (every byte crosses the network twice), and
Dask's own in-memory result passing (values live in worker memory only, are
lost with the worker and are not the cache).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import cloudpickle

from lazyflow.cache.base import Meta, Tier, TierOfflineError
from lazyflow.executors.base import Executor, Outcome, Task

__all__ = ["SharedTask", "Sharing"]


@dataclass(slots=True)
class SharedTask(Task):
    """A task whose inputs are read from, and result written to, a shared cache tier."""

    opener: Callable[[], Tier] | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # parameter -> key in the tier
    key: str = ""
    meta: Meta = field(default_factory=dict)  # the entry's metadata, less what the run tells

    def __call__(self) -> Outcome:
        assert self.opener is not None
        tier = _open(self.opener)
        try:
            self.kwargs.update({param: tier.get(key) for param, key in self.inputs.items()})
        except KeyError as e:
            now = time.time()
            return Outcome(error=LookupError(
                f"node {self.node!r}: input entry {e} vanished from the shared cache before a "
                "worker could read it; run again to recompute it"), attempts=1,
                started=now, ended=now)
        outcome = Task.__call__(self)
        self.kwargs.clear()  # inputs are not needed any more
        if outcome.error is None and outcome.digest is not None:
            try:
                tier.put(self.key, outcome.value, {
                    **self.meta, "digest": outcome.digest, "created": outcome.ended,
                    "duration": outcome.duration, "cost": self.meta.get("cost", 0.0)
                    + outcome.duration, "pid": os.getpid()})
            except Exception:  # the tier is unreachable from here: send the value back
                return outcome
            outcome.value, outcome.stored = None, True
        return outcome


class Sharing:
    """The client's side of shared-cache execution for one run."""

    def __init__(self, tier: Tier, opener: Callable[[], Tier]) -> None:
        self.tier = tier
        self.opener = opener
        self.known: set[str] = set()

    @classmethod
    def for_run(cls, executor: Executor, tiers: list[Tier]) -> Sharing | None:
        """Sharing for a run on ``executor`` with a cache of ``tiers``, if both allow it."""
        if not getattr(executor, "shares_cache", False):
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
        """``task`` as a shared task storing its result under ``key``; ``task`` itself when
        the tier holds an entry of a newer encoding there, which a worker's fresh tier
        would write over (its result comes back by value, as when a node cannot run shared)."""
        foreign = getattr(self.tier, "foreign", None)
        if callable(foreign) and foreign(key):
            return task
        return SharedTask(task.node, task.func, task.kwargs, task.policy, task.hash_result,
                          opener=self.opener, inputs=inputs, key=key, meta=meta)


_OPENED: dict[bytes, Tier] = {}
_OPENED_LOCK = threading.Lock()


def _open(opener: Callable[[], Tier]) -> Tier:
    token = cloudpickle.dumps(opener)
    with _OPENED_LOCK:
        tier = _OPENED.get(token)
        if tier is None:
            tier = _OPENED[token] = opener()
        return tier
