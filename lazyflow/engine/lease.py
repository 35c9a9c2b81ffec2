"""``lease=``: a node's cross-machine single-flight claim on the remote tier.

Design note
-----------
``flight.py`` keeps two requests of one process from computing one key at
once; a lease does it for colleagues sharing a remote (``remote_leases.py``
holds the lease object and its rules). When a node declared with ``lease=``
is about to be computed — its entry missing, the in-process claim won — the
engine takes the key's lease. Won, or no lease to be had (no remote, a
read-only one, an outage): it computes as usual. Held by someone else: it
waits, asking for the entry with growing pauses (:data:`FIRST_PAUSE` doubling
to :data:`LONGEST_PAUSE`; the run's memory of misses bypassed) and for the
lease again, until the entry is there (a hit: "computed meanwhile by" the
holder) or the lease is gone or stale (it takes the lease and computes).

It never waits past the lease's expiry, nor past the node's own lease
lifetime, plus :data:`MARGIN` (clocks differ): then it computes without a
lease. The wait happens where the node is started, on the run's scheduling
thread: the run waits with it (other ready nodes start once it is settled or
submitted); on a thread running an event loop (``flow.aget``) it does not
wait but computes, as ``flight.py`` does. Rejected for now: parking the node like ``flight.py`` does and
polling from the loop, which would let other nodes go on; it needs a timer
in the loop, and leased nodes are the expensive few.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

from lazyflow.cache.base import Stored

if TYPE_CHECKING:
    from lazyflow.cache.remote import RemoteTier
    from lazyflow.engine.state import RunState

__all__ = ["FIRST_PAUSE", "LONGEST_PAUSE", "MARGIN", "lease"]

FIRST_PAUSE = 0.5
"""Seconds before the entry is first asked for again."""
LONGEST_PAUSE = 10.0
"""The longest pause between two questions."""
MARGIN = 5.0
"""Seconds waited past a lease's expiry (the holder's clock may be ahead of ours)."""


def lease(s: RunState, name: str, key: str) -> tuple[tuple[Stored, str], str] | None:
    """Take ``key``'s lease for ``name`` when it declares ``lease=``, or wait for the
    colleague holding it: the entry they stored (found, and the holder's name), or
    ``None``: compute it."""
    seconds = s.plan.nodes[name].options.lease
    if seconds is None:
        return None
    remote = _remote(s)
    if remote is None:
        return None
    holder = f"{socket.gethostname()} pid {os.getpid()}, run {s.run.id}"
    held = remote.take_lease(key, seconds, holder)
    if held is None or not s.waits:  # on an event loop's thread: never block it, compute
        return None
    until = min(held.expires, time.time() + seconds) + MARGIN
    pause = FIRST_PAUSE
    while time.time() < until:
        time.sleep(min(pause, max(0.0, until - time.time())))
        pause = min(pause * 2, LONGEST_PAUSE)
        if remote.arrived(key):
            return _found(s, key, held.holder)
        last, held = held, remote.take_lease(key, seconds, holder)
        if held is None:  # ours now (or none to be had): unless its holder just stored it
            return _found(s, key, last.holder) if remote.arrived(key) else None
    return None


def _found(s: RunState, key: str, holder: str) -> tuple[tuple[Stored, str], str] | None:
    """The entry of ``key`` as the cache finds it, and who computed it."""
    found = s.cache.lookup(key)
    return None if found is None else (found, holder)


def _remote(s: RunState) -> RemoteTier | None:
    """The cache's writable remote tier, if it has one."""
    for tier in s.cache.tiers:
        if tier.name == "remote" and callable(getattr(tier, "take_lease", None)):
            remote: RemoteTier = tier  # type: ignore[assignment]
            return None if remote.store.read_only else remote
    return None
