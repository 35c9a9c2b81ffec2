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
One kind of value entry is rewritten: a map's manifest chunk, whose key
names a place in the manifest rather than a value (``model/mapping.py``),
goes over the version this process read (a colleague's rewrite in between
stays: correct for its ids, fewer hits at worst); created-only, a chunk
stayed as first written, and a changed element was recomputed on every run.

Records. Written by ``remote_records.write_record`` against what the reads
remember of them (:attr:`Reads.versions`).

Reused content. Content that exists already (a second key with equal
bytes) has its modification time refreshed (``RemoteStore.touch``: one
request, only then), so that garbage collection, which keeps content younger
than its grace window, does not sweep it before this run's manifest names
it; content that vanished meanwhile is uploaded again.

The environment's carrier. The entry chosen to carry this process's
environment description (``remote_environment.py``) that is not created —
found there first, or a colleague's create won — makes the writer record the
description under its ``environment`` key instead, once.

Run log. Every entry written (or found written by a colleague) is noted in
the tier's :class:`~lazyflow.cache.remote_manifests.RunLog`, with what the
write created (the ledger), for the run's manifest.

Carried entries. A record naming an entry by ``key`` (a trace record) is
written carrying a copy of that entry when this process holds it: its own
write (pending, or done) or its read. A copy naming content goes only once
that content is known to be stored — the record waits for the entry's own
upload on its lane — else the record goes without a copy.

Packs. Values the tier buffered together (``remote_packs.py``) are written
by :meth:`Writes.write_pack`: one content object holding the bytes of
those whose key no entry holds, then each one's entry naming its span, each
signed with its own bytes' SHA-256. A record carrying a packed entry
carries it as written (its span), once that upload ended.

Signing. With a key to sign with (``trust.py``), every entry object is
signed as it is written (:meth:`Writes._signed`), a merged record included;
a value going to ``cas/`` gets its content's SHA-256 when it is encoded
(:meth:`Writes.pending`), and a copy this process carries is signed under
its own key (its target's). A copy that is not signed by then came from a
colleague's record (a merge) and is left out: this process vouches for
its own entries and for those a trusted key signed, nothing else. A record
read back for a merge that no trusted key signed is left as it is.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import lazyflow.cache.serialize as serialize
from lazyflow.cache.base import Meta, TierOfflineError
from lazyflow.cache.remote_entries import EntryObject, UnknownLayoutError
from lazyflow.cache.remote_environment import CARRIED, carried
from lazyflow.cache.remote_manifests import RunLog
from lazyflow.cache.remote_objects import PreconditionFailed
from lazyflow.cache.remote_packs import Pack
from lazyflow.cache.remote_reads import Reads
from lazyflow.cache.remote_records import Version, write_record
from lazyflow.cache.serialize import Encoded, encoding_of
from lazyflow.cache.trust import UntrustedEntryError, content_sha256
from lazyflow.keys.domains import environment_key

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
        self.trust = self.store.trust
        self._stored: set[str] = set()  # checksums whose content this process saw stored
        self._carried = False  # whether an entry carrying the environment was created
        self._lock = threading.Lock()

    @property
    def signs(self) -> bool:
        """Whether entries are signed as they are written."""
        return self.trust is not None and self.trust.signer is not None

    def pending(self, meta: Meta, encoded: Encoded | None,
                writing: dict[str, Pending]) -> Pending:
        """The write of a value (``encoded``) or a record with stamped ``meta``; a record
        naming an entry this process holds (``writing``, or read) carries it."""
        if encoded is not None:
            entry = EntryObject.for_value(meta, encoded)
            if entry.cas is not None and self.signs:  # hashed once, on the caller's thread
                entry = replace(entry, sha256=content_sha256(encoded))
            return Pending(meta, encoded, entry)
        target = meta.get("key")
        carried = self._carriable(target, writing) if isinstance(target, str) else None
        return Pending(meta, None, EntryObject(meta, carried=carried))

    def write(self, key: str, pending: Pending) -> None:
        """Write one entry or record (on a lane, or at once)."""
        if pending.entry.is_record:
            self._record(key, pending.entry)
        else:
            self._value(key, self._signed(key, pending.entry), pending.encoded)

    def _signed(self, key: str, entry: EntryObject) -> EntryObject:
        """``entry`` signed as the entry of ``key``, when this process signs; a carried copy
        no one signed is left out (this process signed its own copies already)."""
        if not self.signs or self.trust is None:
            return entry
        if entry.carried is not None and not entry.carried.sig:
            entry = replace(entry, carried=None)
        return self.trust.sign(key, entry)

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
        if pending is not None and self.signs and self.trust is not None:
            return self.trust.sign(target, entry)  # our own entry: we vouch for it
        return entry

    def _value(self, key: str, entry: EntryObject, encoded: Encoded | None) -> None:
        """Content first (only if the entry will be written), then the entry, create-only
        (a manifest chunk: over the version read)."""
        condition = self._condition(key, entry, check=entry.cas is not None)
        if condition is None:
            return  # an entry is there (a colleague's, or ours): it stays
        if entry.cas is not None and encoded is not None:
            self._content(entry.cas, encoded)
            with self._lock:
                self._stored.add(entry.cas)
        self._entry(key, entry, condition)

    def _entry(self, key: str, entry: EntryObject, condition: dict[str, Any]) -> None:
        """Write a value's entry under ``condition``; a failed one keeps the colleague's."""
        try:
            version = self.store.write_entry(key, entry, **condition)
            if condition.get("create"):  # a chunk rewritten in place adds no entry (ledger)
                self.log.added(1, len(entry.to_json()))
            if CARRIED in entry.meta:
                self._carried = True
        except PreconditionFailed:  # a colleague's entry came first: theirs stays
            version = None
            self._carrier_lost(entry)
        self.log.wrote(key, entry)
        # ours is as valid as theirs, its content in place: a record naming the key may
        # carry it (a worker's synchronous tier has no pending write to take it from)
        self.reads.wrote(key, entry, version)

    def write_pack(self, members: list[tuple[str, Pending]]) -> None:
        """Write values together (``remote_packs.py``): the keys to be written get one
        pack of their bytes, create-only, then each its entry naming its span of it."""
        todo = []
        for key, pending in members:
            condition = self._condition(key, pending.entry, check=True) \
                if pending.encoded is not None else None
            if condition is not None:
                todo.append((key, pending, condition))
        if len(todo) == 1:  # alone: its own content object, as any value
            key, pending, condition = todo[0]
            entry = self._signed(key, pending.entry)
            if entry.cas is not None and pending.encoded is not None:
                self._content(entry.cas, pending.encoded)
                with self._lock:
                    self._stored.add(entry.cas)
            self._entry(key, entry, condition)
            return
        if not todo:
            return
        pack = Pack.of([pending.encoded for _, pending, _ in todo
                        if pending.encoded is not None])
        self._content(pack.checksum, pack)
        with self._lock:
            self._stored.add(pack.checksum)
        for (key, pending, condition), span in zip(todo, pack.spans, strict=True):
            self._entry(key, self._signed(key, replace(pending.entry, cas=pack.checksum,
                                                       span=span)), condition)

    def _condition(self, key: str, entry: EntryObject, *, check: bool
                   ) -> dict[str, Any] | None:
        """How a value's entry is written: create-only where no entry holds the key (known,
        or with ``check``, checked with one GET), over the version read for a map's
        manifest chunk (its key names a place, not a value: ``model/mapping.py``), or
        not at all (``None``: an entry is there and stays)."""
        condition = self._condition_of(key, entry, check=check)
        if condition is None:
            self._carrier_lost(entry)
        return condition

    def _carrier_lost(self, entry: EntryObject) -> None:
        """The entry meant to carry this process's environment description is not created
        (another stays in its place): the description goes to its own record, where the
        entries naming the carrier find it (``remote_environment.py``)."""
        described = carried(entry.meta)
        digest = entry.meta.get("env")
        if described is None or not isinstance(digest, str) or self._carried:
            return
        self._carried = True  # once: the record holds it for every entry of this process
        self._record(environment_key(digest),
                     EntryObject(serialize.stamp({CARRIED: described}, None)))

    def _condition_of(self, key: str, entry: EntryObject, *, check: bool
                      ) -> dict[str, Any] | None:
        known = self.reads.versions.get(key)
        if known is None and check and self._present(key):
            known = self.reads.versions.get(key)
            if known is None:
                return None
        if known is None or not known.exists:
            return {"create": True}
        read = self.reads.memo.get(key)
        if read is not None and "chunk" in read.entry.meta and known.version is not None \
                and not self.reads.untrusted.get(key) and read.carrier is None:
            return {"match": known.version}
        self.log.wrote(key, read.entry if read is not None else entry)  # the run used it
        return None

    def _present(self, key: str) -> bool:
        """Whether an entry holds ``key`` (one GET): one this lazyflow cannot read or trust
        counts, as it stays; one it reads goes into the run's manifest as written."""
        try:
            found = self.reads.fetch(key)
        except UnknownLayoutError:  # a newer layout's, or one not trusted here
            return True
        if found is not None:
            self.log.wrote(key, found.entry)
        return found is not None

    def _content(self, checksum: str, encoded: Encoded | Pack) -> None:
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
        (``remote_records.py``), signed; a record not trusted here is left as it is."""
        if self.reads.untrusted.get(key):
            return  # met holding a record no trusted key signed: it stays
        entry = self._settled(entry)

        def write(written: EntryObject, *, create: bool = False,
                  match: str | None = None) -> str | None:
            version = self._write_signed(key, written, create=create, match=match)
            if create:  # a record created here (not one rewritten): the ledger counts it
                self.log.added(1, len(written.to_json()))
            return version

        try:
            now = write_record(write, functools.partial(self._read_record, key), entry,
                               self.reads.versions.get(key))
        except _Untrusted as e:
            now = e.version
        self.log.wrote(key, entry)
        if now is None:
            self.reads.versions.pop(key)
        else:
            self.reads.versions.put(key, now)
        self.reads.memo.pop(key)

    def _write_signed(self, key: str, entry: EntryObject, **condition: Any) -> str | None:
        return self.store.write_entry(key, self._signed(key, entry), **condition)

    def _read_record(self, key: str) -> tuple[EntryObject, str | None] | None:
        """The record read afresh for a merge; :class:`_Untrusted` when no trusted key
        signed it (nothing of it may be merged into what this process signs)."""
        found = self.store.read_entry(key)
        if found is None:
            return None
        entry, version = found
        try:
            return self.reads.screened(key, entry, version), version
        except UntrustedEntryError:
            raise _Untrusted(Version(version, True)) from None

    def _settled(self, record: EntryObject) -> EntryObject:
        """``record`` carrying its entry only if that entry's content is known stored."""
        carried = record.carried
        if carried is None or carried.cas is None:
            return record
        target = str(record.meta.get("key"))
        future = self.inflight.get(target)
        if future is not None:
            future.exception()  # the entry's own upload, on its lane, queued before this one
        read = self.reads.memo.get(target)
        if read is not None and read.carrier is None and read.entry.span is not None \
                and carried.span is None \
                and read.entry.meta.get("checksum") == carried.meta.get("checksum"):
            carried = read.entry  # written into a pack: the copy names it as written
            record = replace(record, carried=carried)
        with self._lock:
            stored = carried.cas in self._stored
        if stored or (read is not None and read.entry is carried):  # read: a committed entry
            return record
        return EntryObject(record.meta)


class _Untrusted(Exception):
    """A record this process does not trust met during a compare-and-swap: left as it is."""

    def __init__(self, version: Version) -> None:
        super().__init__("record not signed by a trusted key")
        self.version = version
