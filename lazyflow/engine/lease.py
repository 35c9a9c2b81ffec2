"""``lease=``: a node's cross-machine single-flight claim on the remote tier.

Design note
-----------
``flight.py`` keeps two requests of one process from computing one key at
once; a lease does it for colleagues sharing a remote (``remote_leases.py``
holds the lease object and its rules). When a node declared with ``lease=``
is about to be computed — its entry missing, the in-process claim won — the
engine takes the key's lease. Won, or no lease to be had (no remote, a
read-only one, an outage): it computes as usual. The remote tier renews a
lease it took while the node computes, from a thread of its own, whatever
executor runs the node (the lease is this process's); when the node settles,
finished or failed, the renewal stops (:func:`settled`), with one warning if
a colleague took the lease over meanwhile.

Held by someone else: the node is *parked*, as ``flight.py`` parks a node
whose key another request computes, holding no worker, and a waiting thread
of its own asks for the entry with growing pauses (:data:`FIRST_PAUSE`
doubling to :data:`LONGEST_PAUSE`; the run's memory of misses bypassed) and
for the lease again, while the run's other nodes go on. The wait ends with a
*verdict*: the entry is there (the node is a hit, "computed meanwhile by" the
holder), or the lease is gone or stale and the waiting thread took it (the
node computes). The thread then hands the node's name to the loop
(``RunState.finished``), which starts it again; ``start`` finds the verdict
(:func:`resumed`) and does not look the node up or claim its key again.

It never waits past the lease's expiry, nor past the node's own lease
lifetime, plus :data:`MARGIN` (clocks differ): then it computes without a
lease. Each renewal seen (the lease's expiry moved) sets both bounds again
from that moment, so a holder still computing is waited for as long as it
renews; a lease that never moves (its holder crashed, or its clock runs far
ahead) is waited for one lifetime at most. On a thread running an event loop
(``flow.aget``) it does not wait but computes, as ``flight.py`` does. When
the run ends, its waiting threads stop (:func:`end`).

State. :class:`Leases` (``RunState.leases``, made by the first leased node
to start): the waits in progress, the verdicts not yet taken, and the nodes
computing under a lease. A waiting thread writes only its verdict, then
queues the node's name; the loop reads the verdict after taking the name.
Rejected: waiting on the scheduling thread (the run's other ready nodes
waited with it), and a waiting task on the executor's workers (a worker held
for minutes; and processes or Dask would renew from elsewhere).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from lazyflow.cache.base import Stored
from lazyflow.errors import CacheWarning, warn

if TYPE_CHECKING:
    from lazyflow.cache.remote import RemoteTier
    from lazyflow.cache.remote_leases import Held
    from lazyflow.engine.state import RunState

__all__ = ["FIRST_PAUSE", "LONGEST_PAUSE", "MARGIN", "PARKED", "Leases", "end", "lease",
           "resumed", "settled"]

FIRST_PAUSE = 0.5
"""Seconds before the entry is first asked for again."""
LONGEST_PAUSE = 10.0
"""The longest pause between two questions."""
MARGIN = 5.0
"""Seconds waited past a lease's expiry (the holder's clock may be ahead of ours)."""
PARKED: Final = "parked"
""":func:`lease`: the node waits for a colleague's lease, on a thread of its own."""

Found = tuple[tuple[Stored, str], str]  # the entry as the cache finds it, and who computed it


@dataclass(slots=True)
class Leases:
    """The leases of one run."""

    waits: dict[str, threading.Event] = field(default_factory=dict)
    """Nodes parked on a colleague's lease: set its event to stop the waiting thread."""
    verdicts: dict[str, str | None] = field(default_factory=dict)
    """Waits that ended, until the node starts again: who stored the entry meanwhile,
    or ``None``: compute it."""
    holding: dict[str, str] = field(default_factory=dict)
    """Nodes computing after taking a lease (or finding none to take): the key."""


def lease(s: RunState, name: str, key: str) -> Found | Literal["parked"] | None:
    """Take ``key``'s lease for ``name`` when it declares ``lease=``: ``None``, compute
    it; :data:`PARKED` when a colleague holds it (the node is started again when the
    wait ends); the entry the holder stored, when a wait that ended found it."""
    seconds = s.plan.nodes[name].options.lease
    if seconds is None:
        return None
    remote = _remote(s)
    if remote is None:
        return None
    leases = s.leases
    if leases is None:
        leases = s.leases = Leases()
    if name in leases.verdicts:  # started again: the wait has ended
        leases.waits.pop(name, None)
        holder = leases.verdicts.pop(name)
        if holder is not None:
            return _found(s, key, holder)
    elif name in leases.waits:  # started again while its wait goes on: it stays parked
        s.parked.add(name)
        return PARKED
    else:
        held = remote.take_lease(key, seconds, _holder(s), s.run.id)
        if held is not None and s.waits:  # on an event loop's thread: never park, compute
            _wait_aside(s, leases, name, key, remote, held)
            return PARKED
    leases.holding[name] = key
    return None


def resumed(s: RunState, name: str) -> bool:
    """Whether ``name`` starts again after its wait for a colleague's lease ended: it was
    looked up and leads its key already."""
    return s.leases is not None and name in s.leases.verdicts


def settled(s: RunState, name: str) -> None:
    """``name`` finished or failed: stop renewing its lease, and warn once if a colleague
    took it over while it computed."""
    assert s.leases is not None
    key = s.leases.holding.pop(name, None)
    remote = None if key is None else _remote(s)
    if key is None or remote is None:
        return
    taker = remote.end_lease(key)
    if taker is not None:
        warn(f"node {name!r}: its lease on the remote was taken over by {taker} while it "
             "computed (renewing it failed for a whole lease lifetime: was the remote "
             "unreachable?), so they may compute it too; the value is right either way. "
             "A longer lease= rides out longer outages", CacheWarning)


def end(s: RunState) -> None:
    """The run ends: stop its waiting threads (their nodes are not started again)."""
    assert s.leases is not None
    for stop in s.leases.waits.values():
        stop.set()


def _wait_aside(s: RunState, leases: Leases, name: str, key: str, remote: RemoteTier,
                held: Held) -> None:
    """Park ``name`` and wait for ``held`` on a thread of its own, which queues the node's
    name for the loop when the wait ends."""
    seconds = s.plan.nodes[name].options.lease
    assert seconds is not None
    stop = leases.waits[name] = threading.Event()
    finished, verdicts, holder, run = s.finished, leases.verdicts, _holder(s), s.run.id

    def wait() -> None:
        verdict = None
        try:
            verdict = _wait(remote, key, seconds, (holder, run), held, stop)
        finally:  # whatever happened, the node starts again: never parked for good
            verdicts[name] = verdict
            finished.put(name)

    s.parked.add(name)
    s.run.nodes[name].reason = f"waiting for the lease of {held.holder}"
    threading.Thread(target=wait, name=f"lazyflow-lease-{name}", daemon=True).start()


def _wait(remote: RemoteTier, key: str, seconds: float, taker: tuple[str, str], held: Held,
          stop: threading.Event) -> str | None:
    """Wait for the colleague holding ``key``'s lease: who stored its entry, or ``None``
    when the node is to be computed (the lease is ours now, or the wait timed out).
    ``taker``: how this run names itself in a lease, and its id."""
    until = min(held.expires, time.time() + seconds) + MARGIN
    pause = FIRST_PAUSE
    while time.time() < until:
        if stop.wait(min(pause, max(0.0, until - time.time()))):
            return None  # the run ended
        pause = min(pause * 2, LONGEST_PAUSE)
        if remote.arrived(key):
            return held.holder
        last, found = held, remote.take_lease(key, seconds, *taker)
        if found is None:  # ours now (or none to be had): unless its holder just stored it
            return last.holder if remote.arrived(key) else None
        held = found
        if held != last:  # renewed (or taken over): its holder is alive, wait on
            until = min(held.expires, time.time() + seconds) + MARGIN
    return None


def _found(s: RunState, key: str, holder: str) -> Found | None:
    """The entry of ``key`` as the cache finds it, and who computed it."""
    found = s.cache.lookup(key)
    return None if found is None else (found, holder)


def _holder(s: RunState) -> str:
    """How this run names itself in a lease."""
    return f"{socket.gethostname()} pid {os.getpid()}, run {s.run.id}"


def _remote(s: RunState) -> RemoteTier | None:
    """The cache's writable remote tier, if it has one."""
    for tier in s.cache.tiers:
        if tier.name == "remote" and callable(getattr(tier, "take_lease", None)):
            remote: RemoteTier = tier  # type: ignore[assignment]
            return None if remote.store.read_only else remote
    return None
