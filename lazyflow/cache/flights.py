"""Single-flight: one computation per content key at a time in this process.

Design note
-----------
Policy. Eight threads asking for the same uncached node (on one flow, or on
flows sharing a cache) should compute it once. Before the engine computes a
node whose result may be served from the cache, it *claims* the node's
content key here. The first claim leads: the engine computes, stores, and
*lands* the key. A later claim of a key in flight does not compute: it
registers a wake-up callback and the engine parks the node (it holds no
worker while parked); when the leader lands, every waiter is woken, looks the
key up again and takes the stored value as a cache hit. A leader that lands
without storing (it failed, was cancelled, or its value could not be kept)
wakes its waiters just the same: their lookup misses, the first to claim
again leads and the others wait once more, so a waiter is never failed by
another request's failure.

Nothing here blocks: a waiter is a callback, so the engine folds the wait into
its own wait for finished tasks (and never waits at all on a thread running an
event loop, see ``engine/flight.py``). Claims are held only while a node computes, so
a run never waits on a claim of its own that cannot land: two nodes of one run
with the same key are computed once, the second parked until the first lands.

State. One process-wide registry (:data:`FLIGHTS`): key -> the claim's owner,
and key -> its waiters' callbacks for the few keys anyone waits for. Leading
a key nobody computes takes no lock (``dict.setdefault`` is atomic); waiting
and landing take one, so a waiter is never added after its key landed. A
forked child starts with an empty registry: the parent's leaders never land
in the child.

Rejected: a lock per key held while computing (a waiting thread blocks, an
event loop with it, and a run that waits on its own key deadlocks), and a
``concurrent.futures.Future`` per claim (a Condition and an RLock for every
computed node, although almost no claim is ever waited on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["FLIGHTS", "Flights", "called_here", "calling_keys"]

Wake = Callable[[], object]


class Flights:
    """Which content keys are being computed in this process, and who waits for them.

    >>> flights, first, second = Flights(), object(), object()
    >>> flights.claim("k", first, wake=lambda: None)
    True
    >>> flights.claim("k", second, wake=lambda: print("second: look again"))
    False
    >>> flights.land("k", first)
    second: look again
    """

    def __init__(self) -> None:
        self._forget_all()

    def lead(self, key: str, owner: object) -> bool:
        """Claim ``key`` if no one computes it, and never wait (True: ``owner`` leads).

        The engine's path for every node it computes, so it takes no lock:
        ``dict.setdefault`` is atomic.
        """
        return self._owners.setdefault(key, owner) is owner

    def claim(self, key: str, owner: object, wake: Wake) -> bool:
        """Lead the computation of ``key`` (True), or wait for the one in flight (False).

        When False, ``wake()`` is called once, from the thread that lands the
        key, after its leader stored the value (or gave up): look it up again.
        """
        with self._lock:
            if self._owners.setdefault(key, owner) is owner:
                return True
            self._waiters.setdefault(key, []).append(wake)
            self._changed.notify_all()
            return False

    def land(self, key: str, owner: object) -> None:
        """``owner`` is done with ``key`` (stored or not): wake everyone waiting for it."""
        with self._lock:
            if self._owners.get(key) is not owner:
                return
            del self._owners[key]
            waiters = self._waiters.pop(key, None) if self._waiters else None
        for wake in waiters or ():  # outside the lock: a callback may claim again
            wake()

    def waiting(self, key: str) -> int:
        """How many computations wait for ``key`` (0 when it is not in flight)."""
        with self._lock:
            return len(self._waiters.get(key, ()))

    def await_waiting(self, key: str, count: int, timeout: float | None = None) -> bool:
        """Block until ``key`` is in flight with ``count`` computations waiting for it;
        False if ``timeout`` passed first. For diagnostics, and tests that must know
        requests really overlap.
        """
        with self._changed:
            return self._changed.wait_for(
                lambda: key in self._owners and len(self._waiters.get(key, ())) >= count,
                timeout)

    def _forget_all(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a computation waits
        self._owners: dict[str, object] = {}  # key -> the computation that leads it
        self._waiters: dict[str, list[Wake]] = {}  # key -> wake-ups, only for waited keys


FLIGHTS = Flights()
"""The registry every run of this process claims keys in."""

_CALLING = threading.local()  # .keys: the content keys whose node functions run on this thread


def calling_keys() -> list[str]:
    """This thread's stack of content keys whose node functions are running (``Task`` pushes
    and pops around the call; a plain list, as a context manager per node cost ~1 µs).

    A request made *inside* a node function for that very key (a node that asks for
    itself) must not wait for the claim its own caller holds, which would never land:
    :func:`called_here` lets the engine compute instead, so the recursion ends as Python
    recursion does, with a ``RecursionError``, rather than hanging.
    """
    stack: list[str] | None = getattr(_CALLING, "keys", None)
    if stack is None:
        stack = _CALLING.keys = []
    return stack


def called_here(key: str) -> bool:
    """Whether ``key``'s node function is running further up this thread's stack."""
    return key in getattr(_CALLING, "keys", ())
