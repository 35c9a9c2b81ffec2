"""A disk entry's bytes: the blob of its index row, and the value file a large value gets.

Design note
-----------
Policy. A row's blob is the entry's metadata as JSON, a newline, then, for a
value under ``min_file_size``, the encoded value itself (:func:`load_meta`
reads the metadata back). A larger value is written by :class:`EntryDisk`,
diskcache's storage hook, as a file of frames (``serialize.py``) straight from
the value's buffers; diskcache owns those files (replacing and evicting them
with their rows). Reading a row hands back a :class:`Row`, its blob and the
file's path, and never opens the file, which keeps lookups lazy.

Files. A value file gets a fresh random name, ``<key[:2]>/<32 hex>.val``, in
one of 256 shard folders kept forever, and is complete before the row that
points at it is committed (``disk_index.py``): an interrupted write leaves an
orphan file, never an entry. Its blocks are reserved before the write
(:func:`_preallocate`).

Restated records. A computed node's trace record (``key``, ``digest``,
``node``) and latest record (``digest``, ``key``, ``params``,
``input_digests``, ``fingerprint``) say nothing its entry's metadata does not
say already. So the disk tier stores such a record as its key in a column of
the entry's row (``trace``, ``latest``: :data:`RESTATED`) rather than as a
row of its own, and reading it derives it from the entry's metadata
(:func:`restated`), stamped as the record was. A record with any other field
(a trace record's ``expires``), or whose entry is not in the same batch, is a
row of its own as before.

Rejected: diskcache's own pickled store (it writes large values in hundreds
of thousands of small pieces, ~0.25 GB/s here), and diskcache's default file
names (two random folder levels, removed when empty: a mkdir and two rmdirs
per replaced entry).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from typing import Any

import diskcache

from lazyflow.cache.base import Meta
from lazyflow.cache.serialize import CorruptEntryError, Encoded, dump_meta, write_encoded

__all__ = ["BINARY", "RECORD_ENCODING", "RESTATED", "Entry", "EntryDisk", "Row", "load_meta", "restated",
           "restating"]

BINARY = diskcache.core.MODE_BINARY
"""diskcache's mode of the rows it stores for :class:`EntryDisk` (blob in ``value``)."""


def _preallocate(fd: int, nbytes: int) -> None:
    """Reserve the file's blocks before writing, as ``np.save`` does (best effort).

    Linux ``fallocate`` with ``FALLOC_FL_KEEP_SIZE``: the filesystem allocates
    the extents at once instead of block by block during the write, which
    made 100 MB writes ~30% faster here. Where it is not supported, nothing
    happens (``posix_fallocate`` would instead emulate it by writing zeros).
    """
    if _FALLOCATE is not None:
        _FALLOCATE(fd, 1, ctypes.c_int64(0), ctypes.c_int64(nbytes))


def _load_fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_FALLOCATE = _load_fallocate()


@dataclass(frozen=True, slots=True)
class Entry:
    """What the tier hands diskcache to store: metadata (checksum to come) and the value."""

    meta: Meta
    encoded: Encoded


@dataclass(frozen=True, slots=True)
class Row:
    """A stored row: the blob, and the value file's path if any.

    ``column`` names the :data:`RESTATED` column the key was found in (the row is
    then the entry ``entry``'s, and the key's record is derived from it), else ``None``.
    """

    blob: bytes
    path: str | None
    column: str | None = None
    entry: str = ""


class EntryDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's storage hook: writes frames to files itself, fetches rows lazily."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN
              ) -> tuple[int, int, str | None, Any]:
        """Write an :class:`Entry`'s value to its file; the row's blob gets the checksum."""
        if not isinstance(value, Entry):  # diskcache's own use (e.g. its settings)
            return super().store(value, read, key)  # type: ignore[no-any-return]
        encoded = value.encoded
        filename, full_path = self.filename(key, value)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        try:
            with open(full_path, "xb") as f:
                _preallocate(f.fileno(), encoded.nbytes)
                checksum = write_encoded(encoded, f.write)
        except BaseException:  # no row will point at it: do not leave the bytes behind
            self.remove(filename)
            raise
        blob = dump_meta({**value.meta, "checksum": checksum}) + b"\n"
        return encoded.nbytes, BINARY, filename, sqlite3.Binary(blob)

    def filename(self, key: Any = diskcache.core.UNKNOWN, value: Any = diskcache.core.UNKNOWN
                 ) -> tuple[str, str]:
        """A fresh random name in the key's shard folder: relative, and under the directory."""
        # One level of 256 shards by key, kept forever: diskcache's default (two random
        # levels, removed when empty) costs a mkdir and two rmdirs per replaced entry.
        shard = key[:2] if isinstance(key, str) and key[:2].isalnum() else "__"
        filename = os.path.join(shard, os.urandom(16).hex() + ".val")
        return filename, os.path.join(self._directory, filename)

    def remove(self, file_path: str) -> None:
        """Delete a value file (gone already is fine)."""
        with contextlib.suppress(OSError):  # another process may have removed it first
            os.remove(os.path.join(self._directory, file_path))

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """A :class:`Row` for a row of ours; the value file is not opened."""
        if mode != BINARY:
            return super().fetch(mode, filename, value, read)
        path = None if filename is None else os.path.join(self._directory, filename)
        return Row(bytes(value), path)


def load_meta(head: bytes) -> Meta:
    """A row's metadata; :class:`CorruptEntryError` when it is not a JSON object.

    >>> load_meta(b'{"digest": "d"}')
    {'digest': 'd'}
    """
    try:
        meta = json.loads(head)
    except ValueError as e:
        raise CorruptEntryError(f"metadata is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CorruptEntryError("metadata is not a JSON object")
    return meta


RESTATED: dict[str, tuple[str, ...]] = {
    "trace": ("key", "digest", "node"),
    "latest": ("digest", "key", "params", "input_digests", "fingerprint"),
}
"""The record shapes an entry's metadata restates (design note): column -> the record's
fields, in the order the engine writes them (``records.TraceRecord``, ``LatestRecord``)."""
# by the number of a record's fields, which tells the shapes apart (3 and 5): column, and
# its fields but "key"
_SHAPES = {len(fields): (column, tuple(f for f in fields if f != "key"))
           for column, fields in RESTATED.items()}
_NOT_IN_RECORD, _NOT_IN_META = object(), object()
RECORD_ENCODING = 1
"""The encoding a restated record is stamped with (``serialize.encoding_for(None)``: every
lazyflow reads records); were records stamped otherwise, they would be rows of their own."""


def restating(record: Meta, key: str, meta: Meta) -> str | None:
    """The column under which the entry ``key`` with stamped metadata ``meta`` restates
    ``record`` (a record's metadata as the hierarchy passes it, unstamped); else ``None``.

    >>> meta = {"digest": "d", "node": "n", "stored": 1.0}
    >>> restating({"key": "k", "digest": "d", "node": "n"}, "k", meta)
    'trace'
    >>> restating({"key": "k", "digest": "d", "node": "n", "expires": 2.0}, "k", meta)
    """
    shape = _SHAPES.get(len(record))
    if shape is None or record.get("key") != key:
        return None
    column, fields = shape
    for field in fields:  # as many fields, each of them: the record has exactly these
        if record.get(field, _NOT_IN_RECORD) != meta.get(field, _NOT_IN_META):
            return None
    return column


def restated(column: str, key: str, meta: Meta) -> Meta | None:
    """The record the entry ``key`` (stamped metadata ``meta``) restates in ``column``,
    stamped as the tier stamps a record; ``None`` when ``meta`` lacks a field of it.

    >>> restated("trace", "k", {"digest": "d", "node": "n", "stored": 1.0, "lazyflow": "0.1"})
    {'key': 'k', 'digest': 'd', 'node': 'n', 'created': 1.0, 'stored': 1.0, 'lazyflow': '0.1', 'encoding': 1}
    """
    record: dict[str, Any] = {}
    for field in RESTATED[column]:
        if field == "key":
            record["key"] = key
        elif field in meta:
            record[field] = meta[field]
        else:
            return None
    stored = meta.get("stored")
    record.update(created=stored, stored=stored, lazyflow=meta.get("lazyflow"),
                  encoding=RECORD_ENCODING)
    return record
