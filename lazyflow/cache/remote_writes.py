"""How the remote tier writes: values create-only, content only when needed, records by
compare-and-swap, trace records carrying their target's entry.

Design note
-----------
Values. A value's entry is written create-only, after its content (when the
value is not inline): the first writer's entry stays and a colleague's equal
answer costs nothing more. Content is uploaded only when no entry holds the
key — known from this process's own read of it (its miss, the lookup before
computing it), else checked with one GET (Nix checks likewise before
uploading a NAR). Writers of one key with equal bytes share one content
object; a second writer whose bytes differ and whose miss came before the
first writer's entry leaves its content unnamed, for ``prune``. Rejected:
the entry's create-only put as the only check, after the content, which
uploads large values for nothing and leaves such an orphan at every race.

Records. Written by ``remote_records.write_record`` against what the reads
remember of them (:attr:`Reads.versions`).

Reused content. Content that exists already (a second key with equal
bytes) has its modification time refreshed (``RemoteStore.touch``: one
request, only then), so that garbage collection, which keeps content younger
than its grace window, does not sweep it before this run's manifest names
it; content that vanished meanwhile is uploaded again.

Run log. Every entry written (or found written by a colleague) is noted in
the tier's :class:`~lazyflow.cache.remote_manifests.RunLog`, with what the
write created (the ledger), for the run's manifest.

Carried entries. A record naming an entry by ``key`` (a trace record) is
written carrying a copy of that entry when this process holds it: its own
write (pending, or done) or its read. A copy naming content goes only once
that content is known to be stored — the record waits for the entry's own
upload on its lane — else the record goes without a copy.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

import lazyflow.cache.serialize as serialize
from lazyflow.cache.base import Meta, TierOfflineError
from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.remote_manifests import RunLog
from lazyflow.cache.remote_objects import PreconditionFailed
from lazyflow.cache.remote_reads import Reads
from lazyflow.cache.remote_records import write_record
from lazyflow.cache.serialize import Encoded, encoding_of

__all__ = ["Pending", "Writes"]


@dataclass(frozen=True, slots=True)
class Pending:
    """A write on its way: what ``meta`` and ``get`` answer meanwhile."""

    meta: Meta
    encoded: Encoded | None
    entry: EntryObject


class Writes:
    """The remote tier's writes through its :class:`Reads` (store and memories)."""

    def __init__(self, reads: Reads, log: RunLog | None = None) -> None:
        self.reads = reads
        self.store = reads.store
        self.log = log if log is not None else RunLog()
        self.inflight: dict[str, Future[None]] = {}  # key -> its upload on a lane
        self._stored: set[str] = set()  # checksums whose content this process saw stored
        self._lock = threading.Lock()

    def pending(self, meta: Meta, encoded: Encoded | None,
                writing: dict[str, Pending]) -> Pending:
        """The write of a value (``encoded``) or a record with stamped ``meta``; a record
        naming an entry this process holds (``writing``, or read) carries it."""
        if encoded is not None:
            return Pending(meta, encoded, EntryObject.for_value(meta, encoded))
        target = meta.get("key")
        carried = self._carriable(target, writing) if isinstance(target, str) else None
        return Pending(meta, None, EntryObject(meta, carried=carried))

    def write(self, key: str, pending: Pending) -> None:
        """Write one entry or record (on a lane, or at once)."""
        if pending.entry.is_record:
            self._record(key, pending.entry)
        else:
            self._value(key, pending.entry, pending.encoded)

    def forget_stored(self) -> None:
        """Content this process saw stored may have been collected since."""
        with self._lock:
            self._stored.clear()

    def _carriable(self, target: str, writing: dict[str, Pending]) -> EntryObject | None:
        """The entry of ``target`` this process writes or read, if it holds a value this
        lazyflow reads."""
        pending = writing.get(target)
        read = self.reads.memo.get(target)
        entry = pending.entry if pending is not None else \
            read.entry if read is not None and read.legacy_value is None else None
        if entry is None or entry.is_record or \
                encoding_of(entry.meta) not in serialize.KNOWN_ENCODINGS:
            return None
        return entry

    def _value(self, key: str, entry: EntryObject, encoded: Encoded | None) -> None:
        """Content first (only if no entry holds the key), then the entry, both create-only."""
        known = self.reads.versions.get(key)
        if known is not None and known.exists:
            read = self.reads.memo.get(key)
            self.log.wrote(key, read.entry if read is not None else entry)
            return  # an entry is there (a colleague's, or ours): it stays
        if entry.cas is not None and encoded is not None:
            if known is None:
                found = self.reads.fetch(key)
                if found is not None:  # checked with one GET: never upload content an
                    self.log.wrote(key, found.entry)  # entry will not name
                    return
            self._content(entry.cas, encoded)
            with self._lock:
                self._stored.add(entry.cas)
        try:
            version = self.store.write_entry(key, entry, create=True)
            self.log.added(1, len(entry.to_json()))
        except PreconditionFailed:  # a colleague's entry came first: theirs stays
            version = None
        self.log.wrote(key, entry)
        # ours is as valid as theirs, its content in place: a record naming the key may
        # carry it (a worker's synchronous tier has no pending write to take it from)
        self.reads.wrote(key, entry, version)

    def _content(self, checksum: str, encoded: Encoded) -> None:
        """Upload content create-only; content there already is refreshed (re-uploaded if it
        vanished meanwhile), so a collection does not take it for unused."""
        if self.store.write_content(checksum, encoded):
            self.log.added(0, encoded.nbytes)
            return
        try:
            self.store.touch(self.store.content_path(checksum))
        except FileNotFoundError:  # swept meanwhile: ours is the first copy again
            if self.store.write_content(checksum, encoded):
                self.log.added(0, encoded.nbytes)
        except PreconditionFailed:
            pass
        except OSError as e:  # a store that cannot copy in place: the grace window must do
            if isinstance(e, TierOfflineError):
                raise

    def _record(self, key: str, entry: EntryObject) -> None:
        """Compare-and-swap against what this process knew of the record
        (``remote_records.py``)."""
        entry = self._settled(entry)

        def write(written: EntryObject, *, create: bool = False,
                  match: str | None = None) -> str | None:
            version = self.store.write_entry(key, written, create=create, match=match)
            if create:  # a record created here (not one rewritten): the ledger counts it
                self.log.added(1, len(written.to_json()))
            return version

        now = write_record(write, lambda: self.store.read_entry(key), entry,
                           self.reads.versions.get(key))
        self.log.wrote(key, entry)
        if now is None:
            self.reads.versions.pop(key)
        else:
            self.reads.versions.put(key, now)
        self.reads.memo.pop(key)

    def _settled(self, record: EntryObject) -> EntryObject:
        """``record`` carrying its entry only if that entry's content is known stored."""
        carried = record.carried
        if carried is None or carried.cas is None:
            return record
        target = str(record.meta.get("key"))
        future = self.inflight.get(target)
        if future is not None:
            future.exception()  # the entry's own upload, on its lane, queued before this one
        with self._lock:
            stored = carried.cas in self._stored
        read = self.reads.memo.get(target)
        if stored or (read is not None and read.entry is carried):  # read: a committed entry
            return record
        return EntryObject(record.meta)
