"""The per-node step, as the engine runs it here and as a worker runs it elsewhere.

Design note
-----------
A computed node goes through one step: content key → lookup → call → digest
→ store. In this process the engine takes the key and the lookup itself
(``start.py``: a hit needs no worker), an executor makes the call and the
digest (``Task``), and the engine stores (``store``). When the executor runs
nodes on other machines and the cache has a tier those machines can open
(``shares_cache``, ``shared.py``), the call, the digest *and* the store run on
the worker as one :class:`WorkerStep`: it reads its inputs from the tier by
key, calls, hashes, writes the entry with its metadata and returns only the
digest and timings, so large values never pass through the client.

When the executor takes graphs (``submits_graphs``, ``graphs.py``), a node
may be submitted before its inputs' digests are known, following the steps
of its upstream nodes: it runs as a :class:`GraphStep`, which takes the
whole step on the worker. Given its upstream steps' outcomes, it takes the
content key from their digests (code and parameter digests come prepared),
looks the key up among the entries the client named and in the shared tier
if there is one (early cutoff on the worker), calls, hashes, stores to the
shared tier if any, and returns a :class:`GraphOutcome`: the value (or, in
the shared tier, only that it is stored), the digest and the key it computed.
The engine then settles that outcome only if it keyed the node the same way.

``load`` and ``store`` are the two ends both sides share: a value comes back
with the output files it names put back (``files.py``), and goes in with
their bytes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import cloudpickle

import lazyflow.keys as keys
import lazyflow.model.files as files
from lazyflow.cache.base import Meta, Tier
from lazyflow.cache.snapshot import handout, shareable
from lazyflow.executors.base import Outcome, Task

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache

__all__ = ["FOUND", "NOT_RUN", "RAN", "GraphOutcome", "GraphStep", "WorkerStep", "load", "store"]

RAN: Final = "ran"
FOUND: Final = "found"
NOT_RUN: Final = "not run"


def load(cache: Cache, key: str, digest: str | None = None) -> Any:
    """A stored value, with the output files it names put back if deleted (``files.py``);
    ``digest``: the one the run keyed dependents by (another is a miss, ``Cache.load``)."""
    value, _ = cache.load(key, digest=digest)
    files.restore(value, cache, key=key)  # the key names the node if a warning must
    return value


def store(cache: Cache, key: str, value: Any, meta: Meta) -> Meta | None:
    """Store a value, and the bytes of the output files it names (``files.py``); return
    the metadata the fastest tier stored, if it says (``Cache.store``)."""
    files.capture(value, cache)
    return cache.store(key, value, meta)


@dataclass(slots=True)
class WorkerStep(Task):
    """A node's step on a worker: read inputs from a shared tier, call, hash, store there."""

    opener: Callable[[], Tier] | None = None
    inputs: dict[str, str] = field(default_factory=dict)  # parameter -> key in the tier
    entry: str = ""  # the content key the result is stored under
    meta: Meta = field(default_factory=dict)  # the entry's metadata, less what the call tells

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
                tier.put(self.entry, outcome.value, {
                    **self.meta, "digest": outcome.digest, "created": outcome.ended,
                    "duration": outcome.duration, "cost": self.meta.get("cost", 0.0)
                    + outcome.duration, "pid": os.getpid()})
            except Exception:  # the tier is unreachable from here: send the value back
                return outcome
            outcome.value, outcome.stored = None, True
        return outcome


_OPENED: dict[bytes, Tier] = {}
_OPENED_LOCK = threading.Lock()


def _open(opener: Callable[[], Tier]) -> Tier:
    """The tier ``opener`` opens, once per worker process (one connection, not one a task)."""
    token = cloudpickle.dumps(opener)
    with _OPENED_LOCK:
        tier = _OPENED.get(token)
        if tier is None:
            tier = _OPENED[token] = opener()
        return tier


@dataclass(slots=True)
class GraphOutcome(Outcome):
    """What a :class:`GraphStep` returns: an outcome, and the key the worker computed."""

    key: str = ""
    """The content key, from the input digests the worker saw."""
    state: str = RAN
    """``RAN``; ``FOUND``: the key is stored already and the node was not called (the
    digest and cost are the entry's, and there is no value); ``NOT_RUN``: an input had
    no digest or no value here (it failed, or was found where this worker cannot read
    it), so the engine decides what to do."""
    cost: float = 0.0
    """Compute seconds behind the value, its ancestry included (an entry's ``cost``)."""


@dataclass(slots=True)
class GraphStep(Task):
    """A node's whole step on a worker, after its upstream nodes' steps (``graphs.py``).

    It is called with the :class:`GraphOutcome` of each step it follows, in the order of
    ``follows``; its other inputs are in ``kwargs`` (by value) or ``by_key`` (in the
    shared tier), with their digests in ``known``.
    """

    code: str = ""  # the node's code as keys take it (``Prepared.code``)
    params: dict[str, str] = field(default_factory=dict)  # flow-input digests
    known: dict[str, str] = field(default_factory=dict)  # parameter -> digest, settled inputs
    follows: tuple[tuple[str, str], ...] = ()  # (parameter, upstream node) per outcome given
    base: float = 0.0  # compute cost behind the settled inputs, each upstream node once
    look: bool = False  # look the key up first: submitted before its inputs' digests were known
    found: dict[str, tuple[str, float]] = field(default_factory=dict)
    """Entries the client holds that the key may be: key -> (digest, cost)."""
    opener: Callable[[], Tier] | None = None  # the shared tier, when there is one
    by_key: dict[str, str] = field(default_factory=dict)  # parameter -> key in the tier
    meta: Meta | None = None
    """Write the result to the shared tier with this metadata (less what the call and the
    inputs tell); ``None``: send it back."""

    def __call__(self, *outcomes: GraphOutcome) -> GraphOutcome:
        started = time.time()
        digests = self._digests(outcomes)
        if digests is None:  # an input failed, or has no digest here: the engine decides
            return GraphOutcome(state=NOT_RUN, started=started, ended=started)
        key = keys.content_key(self.code, self.params, digests)
        costs = {up: o.cost for (_, up), o in zip(self.follows, outcomes, strict=True)}
        cost = self.base + sum(costs.values())  # each upstream node once
        tier = None if self.opener is None else _open(self.opener)
        if self.look:  # early cutoff, here on the worker
            entry = self.found.get(key) or _stored(tier, key)
            if entry is not None:
                return GraphOutcome(digest=entry[0], key=key, state=FOUND, cost=entry[1],
                                    started=started, ended=started)
        try:
            kwargs = {**self.kwargs, **self._inputs(outcomes, tier)}
        except _Unreadable:
            return GraphOutcome(state=NOT_RUN, started=started, ended=started)
        except KeyError as e:
            return GraphOutcome(error=LookupError(
                f"node {self.node!r}: input entry {e} vanished from the shared cache before "
                "a worker could read it; run again to recompute it"), key=key, attempts=1,
                started=started, ended=time.time())
        done = Task(self.node, self.func, kwargs, self.policy, self.hash_result, key,
                    self.expected_code)()
        kwargs.clear()  # the inputs are not needed any more
        result = GraphOutcome(None, done.digest, done.error, done.attempts, done.started,
                              done.ended, done.duration, key=key, cost=cost + done.duration)
        if tier is not None and self._stored_in(tier, done, outcomes, digests, result):
            result.stored = True
            return result
        # the steps after it on this worker take copies: none can change what another
        # reads, nor what the engine receives and stores under this digest
        result.value = shareable(done.value)
        return result

    def _digests(self, outcomes: tuple[GraphOutcome, ...]) -> dict[str, str] | None:
        """Every input's digest, or ``None`` when an upstream step gave none."""
        if len(outcomes) != len(self.follows):
            raise TypeError(f"node {self.node!r}: {len(outcomes)} upstream outcomes for "
                            f"{len(self.follows)} inputs")
        digests = dict(self.known)
        for (param, _), outcome in zip(self.follows, outcomes, strict=True):
            if outcome.error is not None or outcome.digest is None \
                    or getattr(outcome, "state", NOT_RUN) == NOT_RUN:
                return None
            digests[param] = outcome.digest
        return digests

    def _stored_in(self, tier: Tier, done: Outcome, outcomes: tuple[GraphOutcome, ...],
                   digests: dict[str, str], result: GraphOutcome) -> bool:
        """Write a computed value to the shared tier; False when it goes back by value."""
        if done.error is not None or done.digest is None or self.meta is None \
                or _foreign(tier, result.key):
            return False
        try:
            tier.put(result.key, done.value, self._entry(done, outcomes, digests, result.cost))
        except Exception:  # the tier is unreachable from here: send the value back
            return False
        return True

    def _inputs(self, outcomes: tuple[GraphOutcome, ...], tier: Tier | None) -> dict[str, Any]:
        """The values of the inputs that are not in ``kwargs``."""
        values: dict[str, Any] = {}
        for (param, _), outcome in zip(self.follows, outcomes, strict=True):
            if outcome.state == FOUND or outcome.stored:
                if tier is None:
                    raise _Unreadable(param)
                try:
                    values[param] = tier.get(outcome.key)
                except KeyError:
                    raise _Unreadable(param) from None
            else:
                values[param] = handout(outcome.value)
        for param, key in self.by_key.items():
            assert tier is not None
            values[param] = tier.get(key)
        return values

    def _entry(self, done: Outcome, outcomes: tuple[GraphOutcome, ...],
               digests: dict[str, str], cost: float) -> Meta:
        """The stored entry's metadata, as the engine would write it."""
        assert self.meta is not None
        upstream_keys = {p: o.key for (p, _), o in zip(self.follows, outcomes, strict=True)}
        return {**self.meta,
                "inputs": {p: upstream_keys.get(p, k) for p, k in self.meta["inputs"].items()},
                "input_digests": {p: digests[p] for p in self.meta["inputs"]},
                "digest": done.digest, "created": done.ended, "duration": done.duration,
                "cost": cost, "pid": os.getpid()}


class _Unreadable(Exception):
    """An input's value is not where this worker can read it."""


def _stored(tier: Tier | None, key: str) -> tuple[str, float] | None:
    """The digest and cost of ``key``'s entry in the shared tier, if it holds one."""
    if tier is None:
        return None
    try:
        meta = tier.meta(key)
    except Exception:  # unreachable from here: compute, as without a tier
        return None
    if meta is None:
        return None
    return meta["digest"], float(meta.get("cost") or meta.get("duration") or 0.0)


def _foreign(tier: Tier, key: str) -> bool:
    """Whether ``key`` holds an entry of an encoding this lazyflow does not read."""
    foreign = getattr(tier, "foreign", None)
    return bool(callable(foreign) and foreign(key))
