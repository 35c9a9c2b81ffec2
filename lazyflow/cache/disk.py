"""The disk tier: entries in a local directory, in an SQLite index shared with diskcache.

Design note
-----------
Policy. This module is the tier: what ``meta``, ``get``, ``put`` and
``delete`` mean for one key, over an index (``disk_index.py``: the SQLite
tables, each thread's connection, eviction, recovery of a damaged index) and
the bytes of each entry (``disk_entries.py``: a row's blob, value files).
Managing the cache as a whole (its keys and size, clearing it, verifying an
entry's bytes with ``check``, closing it) is ``disk_manage.py``, a base of the
tier, so the per-entry paths here reach the index with nothing in between.
Every key is one row of the index whose blob is the entry's metadata as JSON,
a newline, then, for a value under ``min_file_size``, the encoded value
itself. Such *inline* entries, and every record, are buffered and committed in
batches (``batch.py``); a larger value is written to its file and committed at
once. Reading metadata never opens a value file, which keeps lookups lazy.

One row per computed node. A record that restates part of an entry buffered in
the same batch (the node's trace and latest records: ``disk_entries.RESTATED``)
is not encoded nor buffered as a row: the entry's row takes its key (the batch
holds a :class:`~lazyflow.cache.disk_index.Restated` under it, for reading it
back), and reading the key derives the record from the entry's metadata. A
computed node thus costs one row and one JSON text, where it cost three.
Replacing or deleting the entry first writes those records as rows of their
own, so one key's write or delete never takes another key with it.

Lookups together. ``expect`` (``Cache.expect``: a request's trace records
after the first one missing, and the latest records of its new nodes) looks
many keys up in one statement; the next lookup of a key it found missing is a
miss without a statement. A key another process writes meanwhile is missed
once: it is recomputed, never served wrong; this tier's own writes forget
the key, and ``flush`` (which ends every run) forgets them all.

Reads. This tier reads its own buffered writes at once (a key is looked up in
the batch first, then in the index); other processes see them once committed,
each entry whole. Every read of a value verifies its checksum, so a torn write
after a power cut is detected and recomputed instead of being served
(``read_encoded`` raises, the hierarchy drops the entry). A row whose metadata
cannot be read is dropped with a warning; a value file deleted behind the
index's back is a miss and its row goes.

Damage. Every method that touches the index is wrapped in
``quarantine.recovering``: a damaged index is set aside, a fresh one is used
(``disk_index.py``), and the call runs again. So is an index that vanished
(its folder deleted or swapped while open): noticed by the first statement
that fails on it, or by the first one of the next run (``flush`` asks the
index to check the file once), it is reopened where it was, fresh if gone.

Versions. A row whose metadata names an encoding this lazyflow does not read
(``serialize.readable``: a newer lazyflow shares the directory) is a miss:
``meta`` answers ``None`` and remembers the key, and ``put`` leaves that key's
row alone while it still holds such an entry. A lazyflow older than the
``LazyflowEntries`` table does not see its rows: they are misses to it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import diskcache
import xxhash

from lazyflow.cache.base import NO_VALUE, Meta
from lazyflow.cache.batch import Batch
from lazyflow.cache.disk_entries import (
    RECORD_ENCODING,
    RESTATED,
    Row,
    load_meta,
    restated,
    restating,
)
from lazyflow.cache.disk_index import Buffered, DiskIndex, Pending, Restated
from lazyflow.cache.disk_manage import DiskMaintenance
from lazyflow.cache.quarantine import recovering
from lazyflow.cache.serialize import (
    KNOWN_ENCODINGS,
    CorruptEntryError,
    Encoded,
    ForeignEntries,
    decode,
    decode_bytes,
    dump_meta,
    encode,
    encoding_for,
    encoding_of,
    read_encoded,
    readable,
    stamp,
    unknown_encoding,
)
from lazyflow.cache.sizes import format_size
from lazyflow.errors import CacheWarning, warn

__all__ = ["DiskTier"]


class DiskTier(DiskMaintenance, ForeignEntries):
    """Entries under a local directory; size-limited, shared safely by threads and processes.

    Writes of small entries are buffered and committed in batches (``batch.py``):
    at most ~50 ms later, when :meth:`commit` asks, and on :meth:`flush`. This
    tier reads its own buffered writes at once; other processes (and other
    tiers opened on the same directory) see them once committed, each entry whole.

    >>> import tempfile
    >>> tier = DiskTier(tempfile.mkdtemp(), size_limit=10**9)
    >>> tier.put("k", {"a": 1}, {"digest": "d"})
    >>> tier.get("k"), tier.meta("k")["serializer"]
    ({'a': 1}, 'json')
    """

    name = "disk"

    def __init__(self, directory: str | os.PathLike[str], *, size_limit: int,
                 min_file_size: int = 2**16) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.size_limit = int(size_limit)
        self.min_file_size = int(min_file_size)
        self._foreign: set[str] = set()  # keys met holding an encoding this lazyflow cannot read
        self._absent: set[str] = set()  # keys ``expect`` found missing, not looked up since
        self._index = DiskIndex(self.directory, size_limit=self.size_limit,
                                min_file_size=self.min_file_size)
        self._batch: Batch[Buffered] = Batch(self._write, release=self._index.connections.release)

    @property
    def index_path(self) -> str:
        """The SQLite index diskcache keeps in the directory."""
        return self._index.path

    @recovering("_cache")
    def contains(self, key: str) -> bool:
        """Whether a row exists for ``key`` (buffered or committed)."""
        return self._row(key) is not None

    @recovering("_cache")
    def meta(self, key: str) -> Meta | None:
        """The entry's metadata from its row; the value file is not opened.

        ``None`` also for an entry of an encoding this lazyflow does not read
        (``serialize.readable``): a miss, and ``put`` will not replace it.
        """
        row = self._row(key)
        if row is None:
            return None
        return self._screened(key, self._parse(key, row)[0], f"disk cache {self.directory}")

    @recovering("_cache")
    def get(self, key: str) -> Any:
        """Read, verify and decode the value; ``KeyError`` if it is gone."""
        return self.entry(key)[0]

    @recovering("_cache")
    def entry(self, key: str) -> tuple[Any, Meta]:
        """The value (read, verified, decoded) and the metadata *of the same row*: another
        process may replace the entry between a ``meta`` and a ``get`` (a node that is not
        deterministic, written by two); ``KeyError`` if it is gone."""
        row = self._row(key)
        if row is None:
            raise KeyError(key)
        meta, inline = self._parse(key, row)
        if meta is None:
            raise KeyError(key)
        if not readable(meta, f"disk cache {self.directory}"):
            raise unknown_encoding(meta, key)
        if "checksum" not in meta:
            return NO_VALUE, meta
        if row.path is None:
            return decode(decode_bytes(inline, meta["serializer"], meta["checksum"])), meta
        try:
            with open(row.path, "rb") as f:
                encoded = read_encoded(f, meta["serializer"], meta["checksum"])
        except FileNotFoundError:
            self._index.forget_if_unchanged(key, row)  # else evicted or replaced since read: fine
            raise KeyError(key) from None
        return decode(encoded), meta

    @recovering("_cache")
    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Encode ``value`` and store it with its metadata; a record when ``value is NO_VALUE``.

        A small entry is buffered (committed with its batch); a value of
        ``min_file_size`` bytes or more is written to its file and committed
        at once. Returns ``None``: the stored metadata is read back by ``meta``.
        An entry of an encoding this lazyflow does not read, met by ``meta``,
        is left in place.
        """
        if self._absent:
            self._absent.discard(key)
        if self._foreign and key in self._foreign and self._holds_foreign(key):
            return None
        if self._batch.failure is not None:
            self._report_failure()
        if value is NO_VALUE:
            if self._batch.pending and self._restate(key, meta):
                return None
            stamped = stamp(meta, None)
            row = Pending(dump_meta(stamped) + b"\n", stamped["stored"])
        else:
            encoded = encode(value)
            if _size(encoded) >= self.min_file_size:
                self._put_file(key, encoded, meta)
                return None
            # joined once, then sized and hashed: one pass, where Encoded's nbytes and
            # checksum would each build its header again (a put is ~3 µs all told)
            data = encoded.tobytes()
            stamped = stamp(meta, None)
            stamped.update(size=len(data), serializer=encoded.serializer,
                           encoding=encoding_for(encoded.serializer),
                           checksum=xxhash.xxh3_128_hexdigest(data))
            row = Pending(dump_meta(stamped) + b"\n" + data, stamped["stored"], stamped)
        previous = self._batch.get(key)
        if previous is not None:
            self._replacing(key, previous)
        self._batch.add(key, row)
        return None

    @recovering("_cache")
    def expect(self, keys: Sequence[str]) -> None:
        """Look ``keys`` up together, ahead of their lookups one by one (``Cache.expect``):
        the next lookup of each one found missing is a miss without a statement.

        A key another process writes meanwhile is then missed once (recomputed, never
        served wrong); this tier's own writes are seen (``put`` forgets the key), and
        :meth:`flush`, which ends every run, forgets them all.
        """
        batch = self._batch
        # buffered rows are read anyway; looked for before the statement (a row committed
        # meanwhile leaves the batch only once the index holds it) and after (written since)
        wanted = [key for key in keys if batch.get(key) is None] \
            if batch.pending or batch.writing else list(keys)
        found = self._index.present(wanted)
        absent = [key for key in wanted if key not in found]
        if batch.pending or batch.writing:
            absent = [key for key in absent if batch.get(key) is None]
        self._absent.update(absent)

    def commit(self) -> None:
        """Start committing the buffered writes now; returns at once (``Cache.commit``)."""
        self._batch.commit()

    def flush(self) -> None:
        """Commit the buffered writes and wait until they landed (``Cache.flush``)."""
        self._absent.clear()
        self._batch.flush()
        if self._batch.failure is not None:
            self._report_failure()
        # between runs the folder may go (rm -rf .lazyflow) with no statement failing on the
        # connections open to it: the next run's first statement checks it (one stat a run)
        self._index.revalidate()

    @recovering("_cache")
    def delete(self, key: str) -> None:
        """Remove the row and its file."""
        if self._batch.get(key) is not None:
            self._batch.flush()  # else its buffered row would land after the delete
        self._index.delete(key)

    def __repr__(self) -> str:
        return f"DiskTier({self.directory!r}, size_limit={format_size(self.size_limit)})"

    # ----------------------------------------------------------------- internals

    @property
    def _cache(self) -> diskcache.Cache:
        """The open index, which ``recovering`` hands to :meth:`_recover` when it failed."""
        return self._index.cache

    def _recover(self, broken: diskcache.Cache, error: sqlite3.DatabaseError) -> None:
        """Called by :func:`recovering` when a statement found the index damaged."""
        self._index.recover(broken, error)

    def _row(self, key: str) -> Row | None:
        """The row under ``key``: buffered, else from either table (the newer if both);
        for a record another row restates, that row."""
        pending = self._batch.get(key)
        if pending is not None:
            if isinstance(pending, Restated):
                return Row(pending.row.blob, None, pending.column, pending.entry)
            return Row(pending.blob, None)
        absent = self._absent
        if absent and key in absent:
            absent.discard(key)
            return None
        return self._index.row(key)

    def _restate(self, key: str, record: Meta) -> bool:
        """Have the buffered row of the entry ``record`` names hold ``key``, when that
        entry's metadata restates ``record`` (``disk_entries.RESTATED``): one row, no
        JSON of its own. ``False`` when it is not buffered or does not restate it."""
        entry = record.get("key")
        if not isinstance(entry, str) or encoding_for(None) != RECORD_ENCODING:
            return False

        def link(row: Buffered, previous: Buffered | None) -> Restated | None:
            if not isinstance(row, Pending) or row.meta is None:
                return None
            column = restating(record, entry, row.meta)
            if column is None or getattr(row, column) not in (None, key):
                return None  # that row restates another key's record of this shape
            if isinstance(previous, Restated) and getattr(previous.row, previous.column) == key:
                setattr(previous.row, previous.column, None)  # ``key`` named another entry
            setattr(row, column, key)
            return Restated(entry, row, column)

        return self._batch.attach(key, entry, link)

    def _replacing(self, key: str, previous: Buffered) -> None:
        """Before ``key``'s buffered row is replaced: a record it was restated by becomes
        its own row's; the records a replaced entry restated become rows of their own."""
        if isinstance(previous, Restated):
            if getattr(previous.row, previous.column) == key:
                setattr(previous.row, previous.column, None)
            return
        if previous.meta is None:
            return
        for column in RESTATED:
            held = getattr(previous, column)
            if held is None:
                continue
            setattr(previous, column, None)
            record = restated(column, key, previous.meta)
            if record is not None:
                self._batch.add(held, Pending(dump_meta(record) + b"\n", previous.stored))

    @recovering("_cache")
    def _write(self, rows: dict[str, Buffered]) -> None:
        """Commit a batch of rows in one transaction (``Batch`` calls it)."""
        self._index.write(rows)

    def _put_file(self, key: str, encoded: Encoded, meta: Meta) -> None:
        """Write a large value to its file and commit its row in diskcache's table."""
        if self._batch.get(key) is not None:
            self._batch.flush()  # else its buffered row would land after this one
        self._index.put_file(key, encoded, meta)
        if encoded.nbytes > self.size_limit:
            owner = f" of node {meta['node']!r}" if meta.get("node") else ""
            warn(f"a {format_size(encoded.nbytes)} value{owner} exceeds the disk tier's limit "
                 f"of {format_size(self.size_limit)} and was evicted at once; raise "
                 "disk_limit= (or LAZYFLOW_DISK_LIMIT)", CacheWarning)

    def _report_failure(self) -> None:
        failure = self._batch.failed()
        if failure is not None:
            count, error = failure
            warn(f"could not write {count} cache entries to the disk tier "
                          f"{self.directory} ({type(error).__name__}: {error}); they will be "
                          "recomputed when needed", CacheWarning)

    # ----------------------------------------------------------------- reads

    def _holds_foreign(self, key: str) -> bool:
        """Whether ``key`` still holds an entry of an encoding this lazyflow does not read."""
        row = self._row(key)
        if row is not None:
            meta = self._parse(key, row)[0]
            if meta is not None and encoding_of(meta) not in KNOWN_ENCODINGS:
                return True
        self._foreign.discard(key)
        return False

    def _parse(self, key: str, row: Row) -> tuple[Meta | None, bytes]:
        """A row's metadata and inline value; for a record it restates, that record."""
        head, _, inline = row.blob.partition(b"\n")
        try:
            meta = load_meta(head)
        except CorruptEntryError as e:
            warn(f"dropped disk cache entry {key[:12]}… with unreadable metadata "
                          f"({e}); it will be recomputed", CacheWarning)
            self.delete(key)
            return None, b""
        if row.column is not None:
            return restated(row.column, row.entry, meta), b""
        return meta, inline


def _size(encoded: Encoded) -> int:
    """``encoded.nbytes`` without building the header (magic, count, then a length per frame)."""
    return 8 + 8 * len(encoded.frames) + sum(frame.nbytes for frame in encoded.frames)
