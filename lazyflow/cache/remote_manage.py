"""Managing a remote cache from its listing: keys, size, clearing, migrating, sweeping
orphans, verifying and deleting entries.

Design note
-----------
These are what ``Cache.stats``/``prune``/``clear``, ``lazyflow cache
verify`` (``cache/audit.py``) and ``RemoteTier.migrate`` ask of
the remote tier, apart from its requests: the only operations that list the
remote (a request never does), and the deletions, which a request makes
only of an entry it found unreadable.
:class:`~lazyflow.cache.remote.RemoteTier` keeps the public methods (the
Tier protocol and its extras) and delegates their work to
:class:`Maintenance`, after waiting for its own pending writes: what is
managed is what is stored.

State: none of its own. It shares the tier's :class:`~lazyflow.cache.remote_reads.Reads`
(a listing starts a fresh view of the remote: the run's memo is emptied, and
the keys found only in layout 1 are noted for ``remote_legacy.py``) and the
tier's lock around them. Content is shared by checksum, so deleting an entry
leaves its content for garbage collection (``remote_gc.py``: ``prune``) to
sweep once no run uses it, or for :meth:`Maintenance.remove_orphans` (which
reads every entry, so ``prune`` no longer calls it); only content (or a
record's carried copy) that a read found damaged goes with the entry, so that
the next writer does not keep it. Statistics and garbage collection, which
must not read every entry, are ``remote_ledger.py`` and ``remote_gc.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any

import lazyflow.cache.remote_legacy as legacy
import lazyflow.cache.serialize as serialize
from lazyflow.cache.base import Meta
from lazyflow.cache.remote_entries import UnknownLayoutError
from lazyflow.cache.remote_reads import Read, Reads
from lazyflow.cache.serialize import CorruptEntryError, encoding_of, unknown_encoding

__all__ = ["Maintenance"]


class Maintenance:
    """The listing-based operations on one remote cache, over the tier's reads and lock.

    Callers flush their pending writes first (the tier's methods do).
    """

    def __init__(self, reads: Reads, lock: threading.RLock) -> None:
        self.reads = reads
        self.store = reads.store
        self._lock = lock

    def keys(self, pending: Iterable[str]) -> list[str]:
        """Every key with an entry object, sorted (layout-1 entries and ``pending`` writes
        included)."""
        store = self.store
        listing = store.list_objects()
        found = {key for key in map(store.key_of, listing) if key is not None}
        with self._lock:
            old = legacy.keys_in(store, listing) - found
            self.reads.legacy = old
            self.reads.memo.clear()  # a listing starts a fresh view
        return sorted(found | old | set(pending))

    def nbytes(self) -> int:
        """Bytes stored under the root (entries, content, layout 1 and orphans)."""
        listing = self.store.list_objects(detail=True)
        return sum(int(info.get("size") or 0) for info in listing.values())

    def clear(self) -> None:
        """Remove everything under the root, and what reads knew of it."""
        self.store.remove_all()
        with self._lock:
            self.reads.versions.clear()
            self.reads.legacy.clear()

    def migrate(self, *, remove: bool) -> dict[str, Any]:
        """Copy every layout-1 entry into the current layout (``remote_legacy.migrate``); what it did."""
        store = self.store
        done = legacy.migrate(store, legacy.keys_in(store, store.list_objects()), remove=remove)
        with self._lock:
            self.reads.legacy.clear()  # the next listing says which keys stay in layout 1 only
            self.reads.memo.clear()
        return done.as_dict()

    def remove_orphans(self) -> int:
        """Delete content objects no entry names, and layout-1 value objects no layout-1
        entry names; how many."""
        store = self.store
        listing = store.list_objects()
        wanted: set[str | None] = set()
        for key in filter(None, map(store.key_of, listing)):
            try:
                read = self.reads.fetch(key)
            except UnknownLayoutError:  # a newer layout's references are unknown: sweep no content
                wanted = set(filter(None, map(store.checksum_of, listing)))
                break
            except CorruptEntryError:
                continue
            if read is not None:
                carried = read.entry.carried
                wanted.update((read.entry.cas, carried.cas if carried else None))
        orphans = [p for p in listing if store.checksum_of(p) not in (None, *wanted)]
        orphans += legacy.orphans(store, listing, legacy.keys_in(store, listing))
        for path in orphans:
            with contextlib.suppress(FileNotFoundError):
                store.delete(path, what="delete orphan")
        return len(orphans)

    def check(self, key: str) -> Meta | None:
        """The metadata of an intact entry, ``None`` for no value; raises on damage
        (``RemoteTier.check`` says which)."""
        read = self.reads.fetch(key)
        if read is None:
            return None
        meta = read.entry.meta
        if encoding_of(meta) not in serialize.KNOWN_ENCODINGS:
            raise unknown_encoding(meta, key)
        try:
            carried = read.entry.carried
            if carried is not None and carried.data is not None:  # content: its owner's check
                self.reads.verified(key, Read(carried, carrier=key))
            if read.entry.is_record and read.legacy_value is None:
                return None
            return meta if self.reads.verified(key, read) else None
        except CorruptEntryError as e:
            e.node = meta.get("node")
            raise

    def delete(self, key: str) -> None:
        """Remove the entry object, with content or a carrying record a read found damaged,
        and a layout-1 entry of the key."""
        store, reads = self.store, self.reads
        try:
            read = reads.fetch(key)
        except (CorruptEntryError, UnknownLayoutError):
            read = None
        with contextlib.suppress(FileNotFoundError):
            store.delete(store.entry_path(key), what="delete metadata")
        if read is not None and read.entry.cas in reads.damaged:
            with contextlib.suppress(FileNotFoundError):
                store.delete(store.content_path(read.entry.cas))
            reads.damaged.discard(read.entry.cas)
        carrier = reads.stale_carriers.pop(key, None)
        if carrier is not None:
            with contextlib.suppress(FileNotFoundError):
                store.delete(store.entry_path(carrier), what="delete metadata")
            reads.forget(carrier)
        if key in reads.legacy:
            legacy.delete(store, key, _quietly(legacy.read, store, key))
            reads.legacy.discard(key)
        reads.forget(key)


def _quietly(read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except CorruptEntryError:
        return None
