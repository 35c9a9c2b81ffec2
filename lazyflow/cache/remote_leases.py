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

Rejected: renewing a lease while computing (a heartbeat). It would need a
thread per leased node; the lifetime the node declares is the bound instead,
and a computation that outlives it is at worst computed twice, never wrong.
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

__all__ = ["LEASES", "Held", "Holdings", "Taken", "expiry_of", "lease_path", "release", "sweep", "take"]

LEASES = "leases"
"""The folder of lease objects under the root."""
FORMAT = 1
"""The lease object's format (its ``"lease"`` field)."""


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



class Holdings:
    """The leases this process took, released together when its run ends."""

    def __init__(self, store: RemoteStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._taken: dict[str, Taken] = {}

    def take(self, key: str, seconds: float, holder: str) -> Held | None:
        """``None`` when this process now holds ``key``'s lease or none can be had (the
        remote is offline, say); the live lease of someone else otherwise (:func:`take`)."""
        if self._store.outage is not None:
            return None
        found = take(self._store, key, seconds, holder)
        if isinstance(found, Taken):
            with self._lock:
                self._taken[key] = found
            return None
        return found

    def release(self) -> None:
        """Delete the leases taken (their entries have landed, or their nodes failed)."""
        with self._lock:
            taken, self._taken = self._taken, {}
        for key, lease in taken.items():
            release(self._store, key, lease)


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
        body = json.dumps({"lease": FORMAT, "holder": holder,
                           "expires": time.time() + seconds}).encode()
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


def _holder(data: bytes) -> str:
    """Who holds the lease, as its object says."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        holder = json.loads(data).get("holder")
        if isinstance(holder, str):
            return holder
    return "a colleague"
