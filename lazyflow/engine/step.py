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
from typing import TYPE_CHECKING, Any

import cloudpickle

import lazyflow.model.files as files
from lazyflow.cache.base import Meta, Tier
from lazyflow.executors.base import Outcome, Task

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache

__all__ = ["WorkerStep", "load", "store"]


def load(cache: Cache, key: str) -> Any:
    """A stored value, with the output files it names put back if deleted (``files.py``)."""
    value, _ = cache.load(key)
    files.restore(value, cache)
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
