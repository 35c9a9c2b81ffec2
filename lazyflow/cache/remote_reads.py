"""What the remote tier reads: entry objects remembered for a run, values checked, damage noted.

Design note
-----------
Policy. An entry object is read with one GET (``RemoteStore.read_entry``)
and remembered until the run ends (:attr:`Reads.memo`, which the tier
empties in ``flush``): the hierarchy asks for an entry's metadata, then its
value, and both are answered by that one read. A record that carries a copy
of its target's entry (``remote_entries.py``) makes that copy the target's
remembered entry, unless the target's own object was read.

Misses are remembered too, for the run (:attr:`Reads.missing`, emptied with
the memo): a key found missing is not asked again by a second lookup path
(a trace record found but not its entry, equal elements of a map, the
hierarchy's ``lookup`` then ``load``). A key this process writes stops
being missing when its write is queued, so it is found at once. While the
run's workers write to the remote themselves (a Dask run sharing the tier:
``RemoteTier.opener``), a miss may be a worker's write the next moment, so
misses are not remembered (:attr:`Reads.remembers_misses`) until it ends.

Every read also records what this process now knows of the key
(:attr:`Reads.versions`: absent, or present at a version): the writes use
it as the base of a record's compare-and-swap, and to skip uploading content
for a key an entry already holds. Unlike the memo it outlives the run, so a
record read in one run can be updated in the next; it is bounded.

Damage. Bytes are checked against their checksum before anything decodes
them (inline bytes, a content object streamed, or a value's span of a pack
read with one ranged GET). A content object that
reads wrong is noted (:attr:`Reads.damaged`) so that deleting the entry
deletes it too — otherwise the value's next writer, finding the name taken,
would keep the damaged bytes. A copy carried by a record that reads wrong
notes that record (:attr:`Reads.stale_carriers`), deleted with the entry.
Content that is missing is re-checked against the entry read afresh: gone
meanwhile is a miss, replaced meanwhile is read anew, still named is damage.

Layout 1. Keys a listing found only in layout 1 (:attr:`Reads.legacy`) are
read through ``remote_legacy.py``.

Trust. When the store's trust has trusted keys (``trust.py``), every entry
object is checked as it is read, before anything else happens to it: one
no trusted key signed raises :class:`~lazyflow.cache.trust.UntrustedEntryError`
(a miss; the tier remembers the key and never writes over it, and the
process is warned once), and is neither remembered nor carried; a trusted
record carrying a copy that is not signed has the copy left out. A layout-1
entry is never signed. A content object is checked against the signed
``sha256`` once downloaded, before it is decoded. The check costs a canonical
dump of the metadata and one HMAC (and a SHA-256 of inline bytes): tens of
microseconds an entry, against milliseconds for the GET.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, replace

import lazyflow.cache.remote_legacy as legacy
from lazyflow.cache.remote_entries import EntryObject
from lazyflow.cache.remote_records import Recent, Version, said
from lazyflow.cache.remote_store import RemoteStore
from lazyflow.cache.serialize import CorruptEntryError, Encoded, decode_bytes, verify_stream
from lazyflow.cache.trust import UntrustedEntryError, warn_untrusted

__all__ = ["MEMO_SIZE", "VERSIONS_SIZE", "Read", "Reads"]

MEMO_SIZE = 4096
"""Entries remembered within a run (inline values are at most 4 KiB each)."""
VERSIONS_SIZE = 65536
"""Keys whose presence (and record version) is remembered as compare-and-swap bases."""


@dataclass(frozen=True, slots=True)
class Read:
    """An entry as this process read it: the object, its version, and the record that
    carried it (``None``: read from its own object), or its layout-1 value path; and the
    object's modification time, where the read told it (the carrier's, for a copy)."""

    entry: EntryObject
    version: str | None = None
    carrier: str | None = None
    legacy_value: str | None = None
    modified: float | None = None


class Reads:
    """The remote tier's reads over one :class:`RemoteStore`, and what they remember."""

    def __init__(self, store: RemoteStore) -> None:
        self.store = store
        self.memo: Recent[str, Read] = Recent(MEMO_SIZE)
        self.versions: Recent[str, Version] = Recent(VERSIONS_SIZE)
        self.damaged: set[str] = set()
        self.stale_carriers: dict[str, str] = {}
        self.legacy: set[str] = set()
        self.untrusted: Recent[str, bool] = Recent(VERSIONS_SIZE)  # never written over
        self.missing: Recent[str, bool] = Recent(VERSIONS_SIZE)  # found missing this run
        self.remembers_misses = True  # off while workers of the run write (a Dask run)
        self._lock = threading.Lock()

    def fetch(self, key: str) -> Read | None:
        """The entry of ``key`` read afresh (one GET), remembered with the copy it carries;
        :class:`CorruptEntryError` or ``UnknownLayoutError`` when it cannot be read,
        :class:`UntrustedEntryError` when no trusted key signed it (trust configured)."""
        if key in self.legacy:
            return self._fetch_legacy(key)
        fetched = self.store.fetch_entry(key)
        found = None if fetched is None else \
            (self.screened(key, fetched[0], fetched[1].version), fetched[1].version)
        modified = None if fetched is None else fetched[1].modified
        with self._lock:
            if found is None:
                self.memo.pop(key)
                self.versions.put(key, Version(None, False))
                if self.remembers_misses:
                    self.missing.put(key, True)
                return None
            self.missing.pop(key)
            entry, version = found
            read = Read(entry, version, modified=modified)
            self.memo.put(key, read)
            self.versions.put(key, Version(version, True, said(entry) if entry.is_record
                                           else None))
            target = entry.carried_key()
            if target is not None and entry.carried is not None:
                known = self.memo.get(target)
                if known is None or known.carrier is not None:
                    self.memo.put(target, Read(entry.carried, carrier=key, modified=modified))
        return read

    def screened(self, key: str, entry: EntryObject, version: str | None) -> EntryObject:
        """``entry`` as read under ``key``, if the trust configured takes it (a carried copy
        it does not take left out); :class:`UntrustedEntryError` otherwise, with ``key``
        remembered as present (so that nothing is written over it)."""
        trust = self.store.trust
        if trust is None or not trust.verifies:
            return entry
        if not trust.trusts(key, entry):
            with self._lock:
                self.memo.pop(key)
                self.versions.put(key, Version(version, True))
                self.untrusted.put(key, True)
            warn_untrusted(self.store.url)
            raise UntrustedEntryError(key)
        self.untrusted.pop(key)
        target = entry.carried_key()
        if target is not None and entry.carried is not None and \
                not trust.trusts(target, entry.carried):
            return replace(entry, carried=None)
        return entry

    def wrote(self, key: str, entry: EntryObject, version: str | None) -> None:
        """This process wrote ``entry`` (or found a colleague's, as valid) under ``key``."""
        with self._lock:
            self.versions.put(key, Version(version, True))
            self.memo.put(key, Read(entry, version))
            self.missing.pop(key)

    def known_missing(self, key: str) -> bool:
        """Whether ``key`` was found missing in this run (and not written since)."""
        return self.missing.get(key) is not None

    def end_run(self) -> None:
        """Forget what this run read and found missing (the next run asks afresh)."""
        self.memo.clear()
        self.missing.clear()

    def forget(self, key: str) -> None:
        """``key`` was deleted here: nothing remembered of it holds."""
        with self._lock:
            self.memo.pop(key)
            self.missing.pop(key)
            self.versions.put(key, Version(None, False))

    def encoded(self, key: str, read: Read) -> Encoded | None:
        """The value's verified bytes (``None``: a record); a copy carried by a record that
        reads wrong marks that record for deletion with the entry."""
        try:
            return self._bytes(key, read)
        except CorruptEntryError:
            if read.carrier is not None:
                self.stale_carriers[key] = read.carrier
            raise

    def verified(self, key: str, read: Read) -> bool:
        """Whether the value's bytes match their checksum; ``False`` if the entry was
        replaced or deleted meanwhile, :class:`CorruptEntryError` if they do not."""
        entry, meta = read.entry, read.entry.meta
        if entry.data is not None:
            verify_stream(io.BytesIO(entry.data), meta["checksum"], size=meta.get("size"))
            return True
        path = read.legacy_value if read.legacy_value is not None else \
            self.store.content_path(entry.cas) if entry.cas is not None else None
        if path is None:
            return True
        try:
            if entry.span is not None and entry.cas is not None:  # in a pack: its own bytes
                self.store.read_span(entry.cas, entry.span, meta)
            else:
                self.store.verify_stream(path, meta)
        except CorruptEntryError:
            self._note_damaged(entry)
            raise
        except FileNotFoundError:
            if read.carrier is None and read.legacy_value is None:
                current = self.fetch(key)
                if current is None or current.entry.cas != entry.cas:
                    return False
            raise CorruptEntryError(f"content object {(entry.cas or path)[:16]}… is "
                                    "missing") from None
        return True

    def _bytes(self, key: str, read: Read) -> Encoded | None:
        entry, meta = read.entry, read.entry.meta
        if read.legacy_value is not None:
            return self.store.read_stream(read.legacy_value, meta)
        if entry.data is not None:
            return decode_bytes(entry.data, meta["serializer"], meta["checksum"])
        if entry.cas is None:
            return None
        try:
            encoded = self.store.read_content(entry.cas, meta) if entry.span is None \
                else self.store.read_span(entry.cas, entry.span, meta)  # in a pack
            if self.store.trust is not None:
                self.store.trust.check_content(entry, encoded)
            return encoded
        except CorruptEntryError:
            self._note_damaged(entry)
            raise
        except FileNotFoundError:
            current = self.fetch(key)
            if current is None:
                raise KeyError(key) from None  # deleted meanwhile
            if current.entry.cas != entry.cas:  # replaced meanwhile: read the new one
                return self._bytes(key, current)
            raise CorruptEntryError(f"content object {entry.cas[:16]}… of the entry is "
                                    "missing") from None

    def _note_damaged(self, entry: EntryObject) -> None:
        # a pack is not deleted for one member's bad bytes: the others may read well, and
        # a rewrite of this value makes a new pack (another name), never reusing these
        if entry.cas is not None and entry.span is None:
            self.damaged.add(entry.cas)

    def _fetch_legacy(self, key: str) -> Read | None:
        found = legacy.read(self.store, key)
        if found is None:
            self.legacy.discard(key)
            return None
        entry = self.screened(key, EntryObject(found.meta), None)  # never signed
        return Read(entry, legacy_value=found.value)

