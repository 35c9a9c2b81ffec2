"""Leases: "someone is computing this key", so that colleagues wait instead of computing it too.

Design note
-----------
A node declared with ``lease=`` (``model/options.py``) takes a lease on the
remote before it is computed (``engine/lease.py``): the object
``<root>/leases/ab/<key>.json`` (``docs/cache-format.md``), holding who took
it and until when::

    {"lease": 1, "holder": "host pid 4711, run 20261207-124001-3f9a1c",
     "expires": 1765111801.5}

It is written create-only (S3 ``If-None-Match: *``, ``remote_objects.py``):
of two colleagues asking at once, one wins and computes, the other finds the
lease *held* and waits for the entry. A lease past its ``expires`` (its holder
crashed, or is slower than it said) is *stale*: it is taken over by a write
over the version read (S3 ``If-Match``), so of several colleagues taking
over one stale lease, one wins again. The holder deletes its leases when its
run ends (``RemoteTier.finish_run``), after its uploads have landed, so a
colleague who sees the lease gone finds the entry, or (the node failed) takes
the lease and computes; the delete is conditional on the version it wrote.

A lease never blocks or fails anything: every failure to write or read one
(an outage, a read-only remote, a lease object this lazyflow cannot read)
answers :data:`None`, "compute without a lease". A lease object it cannot
read is treated as stale. Garbage collection (``remote_gc.py``) deletes
leases past their expiry; statistics never count them.

Renewal. While its node computes, the holder renews the lease: every
:data:`RENEW_AT` of its lifetime (a third: two renewals may fail before it
lapses) it writes the lease again with ``expires`` a lifetime from now, over
the version it wrote last (``If-Match``), so a computation may outlive the
lifetime it declared without a colleague taking the lease over. One thread
per :class:`Holdings` renews every lease due (started with the first lease
taken, gone when none is renewed). A renewal answered "changed" found the
lease taken over (the holder's renewals failed for a whole lifetime, an
outage say): it stops renewing that lease and remembers who holds it, for
the engine to warn once when the node ends; any other failure (an outage)
tries again at the next renewal. The engine stops the renewal when the node
finishes or fails (``Holdings.stop``); the lease stays until the run ends,
then lapses at its expiry if not released. Rejected: a thread per leased
node (one thread does, leased nodes being few and their renewals rare), and
renewing until the run ends (a failed node's lease would keep colleagues
waiting for the rest of the run).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lazyflow.cache.remote_objects import Listed, PreconditionFailed

if TYPE_CHECKING:
    from lazyflow.cache.remote_store import RemoteStore

__all__ = ["LEASES", "RENEW_AT", "Held", "Holdings", "Taken", "expiry_of", "lease_path", "release",
           "renew", "sweep", "take"]

LEASES = "leases"
"""The folder of lease objects under the root."""
FORMAT = 1
"""The lease object's format (its ``"lease"`` field)."""
RENEW_AT = 1 / 3
"""A held lease is renewed after this part of its lifetime, while its node computes."""


@dataclass(frozen=True, slots=True)
class Taken:
    """A lease this process holds: its object's version (to delete exactly it)."""

    version: str | None


@dataclass(frozen=True, slots=True)
class Held:
    """A live lease someone else holds: who, and until when (Unix seconds, their clock)."""

    holder: str
    expires: float


def lease_path(store: RemoteStore, key: str) -> str:
    """Where the lease object of ``key`` lives."""
    return f"{store.root}/{LEASES}/{key[:2]}/{key}.json"


def take(store: RemoteStore, key: str, seconds: float, holder: str) -> Taken | Held | None:
    """Take the lease of ``key`` for ``seconds``: :class:`Taken` when it is this process's
    now, :class:`Held` when someone else's live lease holds it, ``None`` when no lease
    can be had (the caller computes without one)."""
    try:
        return _take(store, key, seconds, holder)
    except Exception:  # an outage, a read-only remote, a refused request: never blocks a run
        return None


def release(store: RemoteStore, key: str, taken: Taken) -> None:
    """Delete the lease this process took, only if it is still the one written."""
    with contextlib.suppress(Exception):
        store.delete(lease_path(store, key), what="release lease", match=taken.version)


def renew(store: RemoteStore, key: str, taken: Taken, seconds: float, holder: str
          ) -> Taken | Held | None:
    """Extend the lease this process took to ``seconds`` from now, over the version it
    wrote: the lease renewed, the :class:`Held` of whoever took it over meanwhile, or
    ``None`` when the remote could not be asked (try again later)."""
    if taken.version is None:  # no version to write over (never for a lease object): keep it
        return taken
    path = lease_path(store, key)
    body = _body(holder, seconds)
    try:
        try:
            return Taken(store.put(path, [body], match=taken.version, what="renew lease"))
        except (PreconditionFailed, FileNotFoundError):  # changed, or gone (S3: not found)
            pass
        try:
            fetched = store.fetch(path, what="read lease")
        except FileNotFoundError:  # deleted (collected after an outage outlived it): retake it
            return Taken(store.put(path, [body], create=True, what="renew lease"))
        if _holder(fetched.data) == holder:  # our last renewal landed, its answer was lost
            return Taken(fetched.version)
        return Held(_holder(fetched.data), expiry_of(fetched.data) or 0.0)
    except Exception:  # an outage, or the retake lost to a colleague: ask again next time
        return None


@dataclass(slots=True)
class _Holding:
    """A lease this process took, and when to renew it."""

    taken: Taken
    seconds: float
    holder: str
    run: str  # the run that took it: released when that run ends
    due: float  # time.monotonic() of its next renewal
    renewing: bool = True  # False once its node ended: it waits to be released


class Holdings:
    """The leases this process took: renewed while their nodes compute, released when the
    run that took them ends (two runs of one process share the tier's holdings)."""

    def __init__(self, store: RemoteStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a lease to renew was added
        self._writing = threading.Lock()  # held while renewals write: release waits for them
        self._held: dict[str, _Holding] = {}
        self._lost: dict[str, str] = {}  # key -> who took its lease over while it computed
        self._renewer: threading.Thread | None = None

    def take(self, key: str, seconds: float, holder: str, run: str) -> Held | None:
        """``None`` when this process now holds ``key``'s lease (renewing it until
        :meth:`stop`) or none can be had (the remote is offline, say); the live lease of
        someone else otherwise (:func:`take`)."""
        with self._lock:
            mine = self._held.get(key)
            if mine is not None:  # its node is started again (a lazy node, say): still ours
                mine.renewing = True
                self._renew_soon()
                return None
        if self._store.outage is not None:
            return None
        found = take(self._store, key, seconds, holder)
        if isinstance(found, Taken):
            with self._lock:
                self._held[key] = _Holding(found, seconds, holder, run, _due(seconds))
                self._lost.pop(key, None)
                self._renew_soon()
            return None
        return found

    def stop(self, key: str) -> str | None:
        """``key``'s node ended: stop renewing its lease (released when the run ends).
        Returns who took the lease over while it computed, once, if someone did."""
        with self._lock:
            mine = self._held.get(key)
            if mine is not None:
                mine.renewing = False
            return self._lost.pop(key, None)

    def release(self, run: str) -> None:
        """Delete the leases ``run`` took (their entries have landed, or their nodes
        failed); another run's stay held."""
        with self._writing, self._lock:  # no renewal in flight writes a version after this
            held = {key: mine for key, mine in self._held.items() if mine.run == run}
            for key in held:
                del self._held[key]
                self._lost.pop(key, None)
            self._changed.notify_all()
        for key, mine in held.items():
            release(self._store, key, mine.taken)

    # ----------------------------------------------------------------- renewing

    def _renew_soon(self) -> None:
        """Wake the renewing thread, or start it (the lock is held)."""
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_while_held, daemon=True,
                                             name="lazyflow-lease-renewal")
            self._renewer.start()
        self._changed.notify_all()

    def _renew_while_held(self) -> None:
        """The renewing thread: renew each lease when due; end when none is renewed."""
        while True:
            with self._lock:
                while True:
                    dues = [mine.due for mine in self._held.values() if mine.renewing]
                    if not dues:
                        self._renewer = None
                        return
                    wait = min(dues) - time.monotonic()
                    if wait <= 0:
                        break
                    self._changed.wait(wait)
            self._renew_due()

    def _renew_due(self) -> None:
        """Renew every lease due; note those taken over."""
        with self._writing:
            with self._lock:
                now = time.monotonic()
                due = [(key, mine) for key, mine in self._held.items()
                       if mine.renewing and mine.due <= now]
            for key, mine in due:
                with self._store.in_background():  # an outage is announced by the run's flush
                    found = renew(self._store, key, mine.taken, mine.seconds, mine.holder)
                with self._lock:
                    mine.due = _due(mine.seconds)  # after an outage too: at the next renewal
                    if isinstance(found, Taken):
                        mine.taken = found
                    elif isinstance(found, Held) and self._held.get(key) is mine:
                        del self._held[key]  # not ours to release any more
                        self._lost[key] = found.holder


def _due(seconds: float) -> float:
    """When a lease of ``seconds`` taken or renewed now is renewed next (monotonic)."""
    return time.monotonic() + seconds * RENEW_AT


def sweep(store: RemoteStore, listed: list[Listed], now: float) -> int:
    """Delete the listed leases past their expiry (each read: there are few, the live
    ones), each only at the version read; returns how many went."""
    stale = []
    for item in listed:
        try:
            fetched = store.fetch(item.path, what="read lease")
        except FileNotFoundError:
            continue
        expires = expiry_of(fetched.data)
        if expires is None or expires <= now:
            stale.append(Listed(item.path, item.size, item.modified, fetched.version))
    kept = store.delete_many(stale, what="delete leases")
    return len(stale) - len(kept)


def expiry_of(data: bytes) -> float | None:
    """The ``expires`` of a lease object's bytes; ``None`` when they are not a lease this
    lazyflow reads (a stale lease, for every purpose)."""
    try:
        found: Any = json.loads(data)
        expires = float(found["expires"]) if found.get("lease") == FORMAT else math.nan
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    return expires if math.isfinite(expires) else None


def _take(store: RemoteStore, key: str, seconds: float, holder: str) -> Taken | Held | None:
    """:func:`take`, letting failures through."""
    if store.read_only:
        return None
    path = lease_path(store, key)
    for _ in range(3):  # a lease deleted, or taken over, between our requests: ask again
        body = _body(holder, seconds)
        try:
            return Taken(store.put(path, [body], create=True, what="take lease"))
        except PreconditionFailed:
            pass
        try:
            fetched = store.fetch(path, what="read lease")
        except FileNotFoundError:
            continue  # released meanwhile: try to create it again
        expires = expiry_of(fetched.data)
        if expires is not None and expires > time.time():
            return Held(_holder(fetched.data), expires)
        try:  # stale: take it over, unless someone else did first
            return Taken(store.put(path, [body], match=fetched.version, what="take lease"))
        except PreconditionFailed:
            continue
    return None


def _body(holder: str, seconds: float) -> bytes:
    """A lease object held by ``holder`` until ``seconds`` from now."""
    return json.dumps({"lease": FORMAT, "holder": holder,
                       "expires": time.time() + seconds}).encode()


def _holder(data: bytes) -> str:
    """Who holds the lease, as its object says."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        holder = json.loads(data).get("holder")
        if isinstance(holder, str):
            return holder
    return "a colleague"
