"""Managing a disk cache as a whole: its keys, its size, clearing it, verifying an entry's
bytes, closing its index.

Design note
-----------
These are what ``Cache.stats``/``prune``/``clear`` and ``lazyflow cache
verify`` (``cache/audit.py``) ask of the disk tier, and closing its
index when a session ends, apart from its requests (``meta``, ``get``, ``put``, ``expect``, ``delete``: the
per-entry paths, which stay in ``disk.py`` with nothing between them and the
index). :class:`DiskMaintenance` is a base of
:class:`~lazyflow.cache.disk.DiskTier` over the tier's own state (its index,
its batch of buffered writes), so these methods are the tier's, found on it
as before.

State: none of its own. Each operation that reads the index as a whole commits
the tier's buffered writes first (what is managed is what is stored); each one
that touches the index is wrapped in ``quarantine.recovering``, like the
tier's requests. Verifying reads the bytes (inline, or the value file) and
compares them with their checksum; nothing is unpickled and nothing deleted:
that is the caller's decision.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from typing import Any

from lazyflow.cache.base import Meta
from lazyflow.cache.batch import Batch
from lazyflow.cache.disk_entries import Row, load_meta
from lazyflow.cache.disk_index import Buffered, DiskIndex
from lazyflow.cache.quarantine import recovering
from lazyflow.cache.serialize import (
    KNOWN_ENCODINGS,
    CorruptEntryError,
    encoding_of,
    unknown_encoding,
    verify_stream,
)

__all__ = ["DiskMaintenance"]


class DiskMaintenance:
    """What ``Cache.stats``/``prune``/``clear`` and ``lazyflow cache verify`` ask of the disk
    tier, and closing it, over the tier's index and batch (a base of ``DiskTier``)."""

    _index: DiskIndex
    _batch: Batch[Buffered]

    def flush(self) -> None:
        """Commit the buffered writes and wait until they landed (the tier's own)."""
        raise NotImplementedError

    def _row(self, key: str) -> Row | None:
        """The row under ``key``, buffered or committed (the tier's own)."""
        raise NotImplementedError

    def _recover(self, broken: Any, error: sqlite3.DatabaseError) -> None:
        """Set a damaged index aside (the tier's own: ``quarantine.recovering`` calls it)."""
        raise NotImplementedError

    @recovering("_cache")
    def check(self, key: str) -> Meta | None:
        """Compare the entry's stored bytes with their checksum; nothing is unpickled.

        Returns the metadata of an intact entry, ``None`` when the key is gone
        or holds a record (no value); raises :class:`CorruptEntryError` naming
        what is damaged (metadata, a missing value file, the bytes), and
        :class:`UnknownEncodingError` for an entry it cannot judge. Nothing
        is deleted: that is the caller's decision (``lazyflow cache verify``).
        """
        row = self._row(key)
        if row is None:
            return None
        head, _, inline = row.blob.partition(b"\n")
        meta = load_meta(head)
        if row.column is not None:  # a record the row of another key restates: no value
            return None
        if encoding_of(meta) not in KNOWN_ENCODINGS:
            raise unknown_encoding(meta, key)
        if "checksum" not in meta:
            return None
        try:
            present = self._verify_value(key, row, inline, meta)
        except CorruptEntryError as e:
            e.node = meta.get("node")
            raise
        return meta if present else None

    @recovering("_cache")
    def keys(self) -> Iterator[str]:
        """A snapshot of the keys stored (buffered writes committed first)."""
        self.flush()
        return iter(self._index.keys())

    @recovering("_cache")
    def clear(self) -> None:
        """Remove every entry and file, buffered ones and orphaned value files included."""
        self._batch.drop()
        self._index.clear()

    @property
    def nbytes(self) -> int:
        """Bytes used: the SQLite index plus every value file."""
        self.flush()
        return self._volume()

    @recovering("_cache")
    def _volume(self) -> int:
        return self._index.volume()

    def close(self) -> None:
        """Commit what is buffered, then close the index's connections (reopened on next use)."""
        self.flush()
        with self._batch.commit_lock:  # no commit is using a connection meanwhile
            self._index.connections.close()
        self._index.cache.close()

    def _verify_value(self, key: str, row: Row, inline: bytes, meta: Meta) -> bool:
        """Check the value's bytes (inline or in its file); ``False`` if replaced meanwhile."""
        if row.path is None:
            verify_stream(io.BytesIO(inline), meta["checksum"], size=meta.get("size"))
            return True
        try:
            with open(row.path, "rb") as f:
                verify_stream(f, meta["checksum"], size=meta.get("size"))
        except FileNotFoundError:
            current = self._row(key)
            if current is not None and current.path == row.path:
                raise CorruptEntryError(f"value file {row.path} is missing") from None
            return False  # evicted or replaced since the row was read
        return True
