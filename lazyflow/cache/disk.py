"""The disk tier: entries in a local directory, in an SQLite index shared with diskcache.

Design note
-----------
Policy. Every key is one row of the index (``cache.db``) whose blob is the
entry's metadata as JSON, a newline, then, for a value under
``min_file_size``, the encoded value itself. Such *inline* entries, and every
record, are rows of lazyflow's own table ``LazyflowEntries`` (key, stored,
blob), buffered and committed in batches (``batch.py``). A larger value is
written by :class:`_EntryDisk` as a file of frames (``serialize.py``) straight
from the value's buffers and goes through diskcache as one row of its
``Cache`` table naming the file; diskcache owns those files (replacing and
evicting them with their rows). Reading metadata is one SELECT over both
tables that never opens a value file, which keeps lookups lazy.

Why a table of our own: a computed node writes three rows (value, trace record,
latest record), and a 1,000-node chain spent 86% of its first run in those
writes, one diskcache commit each (~350 µs per node). Inside one transaction a
``diskcache.Cache.set`` still costs ~30 µs here (18 µs with culling off) and an
insert into diskcache's table 7-11 µs (its triggers and three indexes), against
~3 µs for a batch insert into a table of three columns. A row keeps the layout
of diskcache's inline rows, so a row of either table parses the same, and the
older layout (every row in ``Cache``, as in ``tests/fixtures/cache-v2``) is
still read: a key is looked up in both, and when both hold it, the row stored
last wins. Writing a key removes its row from the other table in the same step,
so normally only one exists. This tier reads diskcache's columns (``key``,
``raw``, ``mode``, ``filename``, ``value``, ``store_time``; checked when the
index opens) and deletes its rows, whose accounting diskcache's triggers keep;
it never inserts into that table itself.

Limit. ``size_limit`` covers the index file (whose pages hold the inline rows)
plus the value files, as diskcache measures it (``volume``). After each batch,
and before each value file, the oldest stored entries of either table go until
the tier fits; diskcache then rarely needs to cull on its own.

Atomicity. A batch is one transaction: a process killed mid-batch loses that
batch (writes of the last ~50 ms at most, or since the engine last waited on a
node) and nothing that was committed. A value file gets a fresh random name and
is complete before the row that points at it is committed; an interrupted write
leaves an orphan file, never an entry. A concurrent writer of the same key
replaces the row (and diskcache deletes the older file), so one valid entry
remains. No fsync (SQLite's ``synchronous=NORMAL``, as diskcache): the checksum
in the metadata is verified on every read, so a torn write after a power cut is
detected and recomputed instead of being served (``read_encoded`` raises, the
hierarchy drops the entry).

Damage. A damaged index (``cache.db`` overwritten, "file is not a database"
or "malformed") is found when the tier opens it or when a statement first
fails; ``quarantine.py`` moves it aside to ``cache.db.damaged-<timestamp>``,
the tier goes on with a fresh, empty index and warns once. The value files the
old index pointed at are orphans then: never served (no row names them) and
removed by :meth:`DiskTier.clear`, as are those of interrupted writes.

Versions. A row whose metadata names an encoding this lazyflow does not read
(``serialize.readable``: a newer lazyflow shares the directory) is a miss:
``meta`` answers ``None`` and remembers the key, and ``put`` leaves that key's
row alone while it still holds such an entry. A lazyflow older than the
``LazyflowEntries`` table does not see its rows: they are misses to it.

Rejected: diskcache's own pickled store (it writes large values in hundreds
of thousands of small pieces, ~0.25 GB/s here), a sidecar metadata entry per
key (two rows that eviction could separate), inserting our rows into
diskcache's ``Cache`` table ourselves (2-3x the cost of our own table, and its
bookkeeping is diskcache's to change), and a table keyed by the key itself
(``WITHOUT ROWID``: every insert at a random place moved whole rows, 5-6 µs).
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import io
import json
import os
import sqlite3
import sys
import threading
import warnings
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import diskcache
import xxhash

from lazyflow.cache.base import NO_VALUE, Meta
from lazyflow.cache.batch import Batch
from lazyflow.cache.quarantine import is_damage, is_damaged, recovering, set_aside
from lazyflow.cache.serialize import (
    KNOWN_ENCODINGS,
    CorruptEntryError,
    Encoded,
    ForeignEntries,
    decode,
    decode_bytes,
    dump_meta,
    encode,
    encoding_of,
    read_encoded,
    readable,
    stamp,
    unknown_encoding,
    verify_stream,
    write_encoded,
)
from lazyflow.cache.sizes import format_size
from lazyflow.errors import CacheWarning

__all__ = ["DiskTier"]

TABLE = "LazyflowEntries"
"""lazyflow's own table in the index: inline entries and records (``docs/cache-format.md``)."""
# A rowid table: rows are appended in commit order (a replaced row gets a new rowid), so
# rowid order is eviction order without an index, and only the small key index takes
# random inserts (a table keyed by the random key itself moved whole rows around: 5-6 µs
# per insert against 2.5 µs here).
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT NOT NULL UNIQUE, "
           "stored REAL NOT NULL, blob BLOB NOT NULL)",)
_BINARY = diskcache.core.MODE_BINARY
# diskcache's columns this tier reads (checked when the index opens)
_CACHE_COLUMNS = frozenset({"rowid", "key", "raw", "store_time", "mode", "filename", "value"})
# One statement looks a key up in both tables: ours, and diskcache's (values in files,
# and every entry of the older layout); ``stored`` decides if both hold it.
_FIND = (f"SELECT blob, NULL, stored FROM {TABLE} WHERE key = ?1 UNION ALL "
         "SELECT value, filename, store_time FROM Cache "
         f"WHERE key = ?1 AND raw = 1 AND mode = {_BINARY}")
_INSERT = f"INSERT OR REPLACE INTO {TABLE} (key, stored, blob) VALUES (?, ?, ?)"
_CHUNK = 500  # keys per "IN (...)": well under SQLite's limit on bound variables
_EVICT = 64  # rows of ours evicted per step (they are small: under min_file_size)
_EVICT_STEPS = 1000  # steps per cull at most: an index that never shrinks cannot loop
_TIMEOUT = 60.0  # seconds to wait for another writer's lock, as diskcache does

_Pending = tuple[bytes, float]
"""A buffered row: its blob and when it was stored."""


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
class _Entry:
    """What the tier hands diskcache to store: metadata (checksum to come) and the value."""

    meta: Meta
    encoded: Encoded


@dataclass(frozen=True, slots=True)
class _Row:
    """A stored row: the blob, and the value file's path if any."""

    blob: bytes
    path: str | None


class _EntryDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's storage hook: writes frames to files itself, fetches rows lazily."""

    def store(self, value: Any, read: bool, key: Any = diskcache.core.UNKNOWN
              ) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, _Entry):  # diskcache's own use (e.g. its settings)
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
        return encoded.nbytes, _BINARY, filename, sqlite3.Binary(blob)

    def filename(self, key: Any = diskcache.core.UNKNOWN, value: Any = diskcache.core.UNKNOWN
                 ) -> tuple[str, str]:
        # One level of 256 shards by key, kept forever: diskcache's default (two random
        # levels, removed when empty) costs a mkdir and two rmdirs per replaced entry.
        shard = key[:2] if isinstance(key, str) and key[:2].isalnum() else "__"
        filename = os.path.join(shard, os.urandom(16).hex() + ".val")
        return filename, os.path.join(self._directory, filename)

    def remove(self, file_path: str) -> None:
        with contextlib.suppress(OSError):  # another process may have removed it first
            os.remove(os.path.join(self._directory, file_path))

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode != _BINARY:
            return super().fetch(mode, filename, value, read)
        path = None if filename is None else os.path.join(self._directory, filename)
        return _Row(bytes(value), path)


class _Connections:
    """Each thread's own connection to the index, opened on first use with diskcache's
    per-connection settings (``pragmas``): an SQLite connection must not be used by two
    threads at once, nor cross a fork."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pragmas: dict[str, int] = {}
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []  # every thread's, to close them all
        self._lock = threading.Lock()
        self._generation = 0  # bumped when connections must reopen (close, fork, new index)

    def connect(self) -> sqlite3.Connection:
        """A new connection, not kept (for a one-off statement)."""
        # the settings diskcache uses: synchronous=NORMAL (no fsync per commit), its page
        # cache and memory map
        con = sqlite3.connect(self.path, timeout=_TIMEOUT, isolation_level=None,
                              check_same_thread=False)
        for pragma, value in self.pragmas.items():
            con.execute(f"PRAGMA {pragma} = {value}")
        return con

    def get(self) -> sqlite3.Connection:
        """This thread's connection."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            opened = self.connect()
            with self._lock:
                self._opened.append(opened)
            local.con, local.generation = opened, self._generation
        con: sqlite3.Connection = local.con
        return con

    def release(self) -> None:
        """Close this thread's connection (its thread ends)."""
        con = getattr(self._local, "con", None)
        self._local.generation = None
        if con is not None:
            with self._lock:
                if con in self._opened:
                    self._opened.remove(con)
            con.close()

    def close(self) -> None:
        """Close every thread's connection; each opens a new one on its next use."""
        with self._lock:
            self._generation += 1
            opened, self._opened = self._opened, []
        for con in opened:
            with contextlib.suppress(sqlite3.Error):
                con.close()

    def forked(self) -> None:
        """In a forked child: forget the parent's connections (never used here again)."""
        self._generation += 1
        self._opened = []
        self._lock = threading.Lock()


class DiskTier(ForeignEntries):
    """Entries under a local directory; size-limited, shared safely by threads and processes.

    Writes of small entries are buffered and committed in batches (``batch.py``):
    at most ~50 ms later, when :meth:`commit` asks, and on :meth:`flush`. This
    tier reads its own buffered writes at once; other processes (and other
    tiers opened on the same directory) see them once committed, each entry whole.

    >>> import tempfile
    >>> tier = DiskTier(tempfile.mkdtemp(), size_limit=10**9)
    >>> tier.put("k", {"a": 1}, {"digest": "d"})
    >>> tier.get("k"), tier.meta("k")["serializer"]
    ({'a': 1}, 'cloudpickle')
    """

    name = "disk"

    def __init__(self, directory: str | os.PathLike[str], *, size_limit: int,
                 min_file_size: int = 2**16) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        self.size_limit = int(size_limit)
        self.min_file_size = int(min_file_size)
        self._recovery = threading.Lock()
        self._foreign: set[str] = set()  # keys met holding an encoding this lazyflow cannot read
        self._connections = _Connections(self.index_path)
        self._page_size = 4096
        self._batch: Batch[_Pending] = Batch(self._write, release=self._connections.release)
        _TIERS.add(self)
        try:
            self._cache = self._open()
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            self._replace_index(e)

    @property
    def index_path(self) -> str:
        """The SQLite index diskcache keeps in the directory."""
        return os.path.join(self.directory, diskcache.core.DBNAME)

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
        row = self._row(key)
        if row is None:
            raise KeyError(key)
        meta, inline = self._parse(key, row)
        if meta is None:
            raise KeyError(key)
        if not readable(meta, f"disk cache {self.directory}"):
            raise unknown_encoding(meta, key)
        if "checksum" not in meta:
            return NO_VALUE
        if row.path is None:
            return decode(decode_bytes(inline, meta["serializer"], meta["checksum"]))
        try:
            with open(row.path, "rb") as f:
                encoded = read_encoded(f, meta["serializer"], meta["checksum"])
        except FileNotFoundError:
            self._forget_if_unchanged(key, row)  # else evicted or replaced since read: fine
            raise KeyError(key) from None
        return decode(encoded)

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
        meta = _load_meta(head)
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
    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Encode ``value`` and store it with its metadata; a record when ``value is NO_VALUE``.

        A small entry is buffered (committed with its batch); a value of
        ``min_file_size`` bytes or more is written to its file and committed
        at once. Returns ``None``: the stored metadata is read back by ``meta``.
        An entry of an encoding this lazyflow does not read, met by ``meta``,
        is left in place.
        """
        if self._foreign and key in self._foreign and self._holds_foreign(key):
            return None
        if self._batch.failure is not None:
            self._report_failure()
        if value is NO_VALUE:
            stamped = stamp(meta, None)
            blob = dump_meta(stamped) + b"\n"
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
                           checksum=xxhash.xxh3_128_hexdigest(data))
            blob = dump_meta(stamped) + b"\n" + data
        self._batch.add(key, (blob, stamped["stored"]))
        return None

    def commit(self) -> None:
        """Start committing the buffered writes now; returns at once (``Cache.commit``)."""
        self._batch.commit()

    def flush(self) -> None:
        """Commit the buffered writes and wait until they landed (``Cache.flush``)."""
        self._batch.flush()
        if self._batch.failure is not None:
            self._report_failure()

    @recovering("_cache")
    def delete(self, key: str) -> None:
        """Remove the row and its file."""
        if self._batch.get(key) is not None:
            self._batch.flush()  # else its buffered row would land after the delete
        self._connections.get().execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,))
        self._cache.delete(key, retry=True)

    @recovering("_cache")
    def keys(self) -> Iterator[str]:
        """A snapshot of the keys stored (buffered writes committed first)."""
        self.flush()
        rows = self._connections.get().execute(
            f"SELECT key FROM {TABLE} UNION SELECT key FROM Cache WHERE raw = 1").fetchall()
        return iter([key for (key,) in rows if isinstance(key, str)])

    @recovering("_cache")
    def clear(self) -> None:
        """Remove every entry and file, buffered ones and orphaned value files included."""
        self._batch.drop()
        self._connections.get().execute(f"DELETE FROM {TABLE}")
        self._cache.clear(retry=True)
        self._remove_orphans()

    @property
    def nbytes(self) -> int:
        """Bytes used: the SQLite index plus every value file."""
        self.flush()
        return self._volume()

    @recovering("_cache")
    def _volume(self) -> int:
        return _volume_of(self._connections.get(), self._page_size)

    def close(self) -> None:
        """Commit what is buffered, then close the index's connections (reopened on next use)."""
        self.flush()
        with self._batch.commit_lock:  # no commit is using a connection meanwhile
            self._connections.close()
        self._cache.close()

    def __repr__(self) -> str:
        return f"DiskTier({self.directory!r}, size_limit={format_size(self.size_limit)})"

    # ----------------------------------------------------------------- the index

    def _open(self) -> diskcache.Cache:
        # Built in two steps so that a constructor failing on a damaged index closes its
        # connection before the file is moved aside: SQLite removes a database's -wal and
        # -shm *by name* when its last connection closes, which after the move would be
        # the fresh index's.
        cache = diskcache.Cache.__new__(diskcache.Cache)
        try:
            cache.__init__(self.directory, size_limit=self.size_limit, disk=_EntryDisk,
                           disk_min_file_size=self.min_file_size,
                           eviction_policy="least-recently-stored")
            self._connections.pragmas = {"synchronous": int(cache.sqlite_synchronous),
                                         "cache_size": int(cache.sqlite_cache_size),
                                         "mmap_size": int(cache.sqlite_mmap_size)}
            self._page_size = int(cache._page_size)
            self._create_table()
        except BaseException:
            with contextlib.suppress(Exception):
                cache.close()
            raise
        return cache

    def _create_table(self) -> None:
        """Create lazyflow's table if missing; check diskcache's columns this tier reads."""
        with contextlib.closing(self._connections.connect()) as con:
            missing = _CACHE_COLUMNS - {row[1] for row in con.execute("PRAGMA table_info(Cache)")}
            if missing:
                raise RuntimeError(
                    f"the disk cache index {self.index_path} has a 'Cache' table without the "
                    f"columns {sorted(missing)}: it was written by a diskcache "
                    f"this lazyflow does not know (installed: {diskcache.__version__}); "
                    "install diskcache 5.x or use another cache directory")
            for statement in _SCHEMA:
                con.execute(statement)

    def _forked(self) -> None:
        """In a forked child: new connections and locks (see ``_forget_connections``)."""
        self._connections.forked()
        self._recovery = threading.Lock()

    def _row(self, key: str) -> _Row | None:
        """The row under ``key``: buffered, else from either table (the newer if both)."""
        pending = self._batch.get(key)
        if pending is not None:
            return _Row(pending[0], None)
        rows = self._connections.get().execute(_FIND, (key,)).fetchall()
        if not rows:
            return None
        blob, filename, _ = rows[0] if len(rows) == 1 else max(rows, key=lambda r: r[2] or 0.0)
        return _Row(bytes(blob), None if filename is None
                    else os.path.join(self.directory, filename))

    # ----------------------------------------------------------------- writes

    @recovering("_cache")
    def _write(self, rows: dict[str, _Pending]) -> None:
        """Commit a batch of rows in one transaction (``Batch`` calls it)."""
        con = self._connections.get()
        with _transaction(con):
            replaced = _rows_in_cache(con, list(rows))  # a key's row moves to our table
            if replaced:
                con.executemany("DELETE FROM Cache WHERE rowid = ?",
                                [(rowid,) for rowid, _ in replaced])
            con.executemany(_INSERT, [(key, stored, blob) for key, (blob, stored) in rows.items()])
        _remove_files(self.directory, (filename for _, filename in replaced))
        self._cull(con)

    def _put_file(self, key: str, encoded: Encoded, meta: Meta) -> None:
        """Write a large value to its file and commit its row in diskcache's table."""
        if self._batch.get(key) is not None:
            self._batch.flush()  # else its buffered row would land after this one
        con = self._connections.get()
        if con.execute(f"SELECT 1 FROM {TABLE} WHERE key = ?", (key,)).fetchone():
            con.execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,))
        self._cull(con, room=encoded.nbytes)
        self._cache.set(key, _Entry(stamp(meta, encoded, checksum=False), encoded), retry=True)
        if encoded.nbytes > self.size_limit:
            warnings.warn(f"a {format_size(encoded.nbytes)} value of node {meta.get('node')!r} "
                          f"exceeds the disk tier's limit of {format_size(self.size_limit)} and "
                          "was evicted at once; raise disk_limit= (or LAZYFLOW_DISK_LIMIT)",
                          CacheWarning, stacklevel=6)

    def _cull(self, con: sqlite3.Connection, room: int = 0) -> None:
        """Evict the oldest stored entries until ``room`` more bytes fit in the limit."""
        _evict(con, self.directory, limit=self.size_limit - room, page_size=self._page_size)

    def _report_failure(self) -> None:
        failure = self._batch.failed()
        if failure is not None:
            count, error = failure
            warnings.warn(f"could not write {count} cache entries to the disk tier "
                          f"{self.directory} ({type(error).__name__}: {error}); they will be "
                          "recomputed when needed", CacheWarning, stacklevel=4)

    # ----------------------------------------------------------------- damage

    def _replace_index(self, error: sqlite3.DatabaseError) -> None:
        """Set the damaged index aside, open a fresh one, then warn (once per damaged file)."""
        self._connections.close()  # before the move: see _open
        # not damaged on a fresh connection: another process set it aside already
        moved = set_aside(self.index_path) if is_damaged(self.index_path) else None
        self._cache = self._open()
        if moved is not None:
            warnings.warn(
                f"the disk cache index {self.index_path} is damaged ({error}); it was moved "
                f"to {moved} and a fresh, empty index is used, so cached values will be "
                "recomputed. The value files the old index pointed at are orphans: "
                f"`lazyflow cache clear --tier disk --cache-dir {self.directory}` removes "
                f"them; delete {moved} once you no longer need it", CacheWarning, stacklevel=4)

    def _recover(self, broken: diskcache.Cache, error: sqlite3.DatabaseError) -> None:
        """Called by :func:`recovering` when a statement found the index damaged."""
        with self._recovery:
            if self._cache is not broken:  # another thread recovered while this one failed
                return
            broken.close()
            self._replace_index(error)

    def _remove_orphans(self) -> None:
        """Delete value files no row points at (a set-aside index's, interrupted writes')."""
        kept = {os.path.join(self.directory, filename) for (filename,) in self._connections.get().execute(
            "SELECT filename FROM Cache WHERE filename IS NOT NULL")}  # concurrent writers' too
        for path in _value_files(self.directory):
            if path not in kept:
                with contextlib.suppress(OSError):  # another process removed it first
                    os.remove(path)

    # ----------------------------------------------------------------- reads

    def _verify_value(self, key: str, row: _Row, inline: bytes, meta: Meta) -> bool:
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

    def _holds_foreign(self, key: str) -> bool:
        """Whether ``key`` still holds an entry of an encoding this lazyflow does not read."""
        row = self._row(key)
        if row is not None:
            meta = self._parse(key, row)[0]
            if meta is not None and encoding_of(meta) not in KNOWN_ENCODINGS:
                return True
        self._foreign.discard(key)
        return False

    def _forget_if_unchanged(self, key: str, row: _Row) -> None:
        """Drop a row whose value file was deleted behind diskcache's back."""
        with self._cache.transact(retry=True):
            current = self._cache.get(key, retry=True)
            if isinstance(current, _Row) and current.path == row.path:
                self._cache.delete(key, retry=True)

    def _parse(self, key: str, row: _Row) -> tuple[Meta | None, bytes]:
        head, _, inline = row.blob.partition(b"\n")
        try:
            meta = _load_meta(head)
        except CorruptEntryError as e:
            warnings.warn(f"dropped disk cache entry {key[:12]}… with unreadable metadata "
                          f"({e}); it will be recomputed", CacheWarning, stacklevel=5)
            self.delete(key)
            return None, b""
        return meta, inline


_TIERS: weakref.WeakSet[DiskTier] = weakref.WeakSet()


def _forget_connections() -> None:
    for tier in list(_TIERS):
        tier._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_connections)


@contextlib.contextmanager
def _transaction(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once (``IMMEDIATE``): it waits for other writers
    up to the connection's timeout, never fails half-way on a lock."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _rows_in_cache(con: sqlite3.Connection, keys: list[str]) -> list[tuple[int, str | None]]:
    """Rowid and file of the rows diskcache's table holds under any of ``keys``."""
    found: list[tuple[int, str | None]] = []
    if not con.execute("SELECT value FROM Settings WHERE key = 'count'").fetchone()[0]:
        return found  # no large values and no older layout: nothing to look for
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        found += con.execute("SELECT rowid, filename FROM Cache WHERE raw = 1 AND key IN "
                             f"({','.join('?' * len(chunk))})", chunk).fetchall()
    return found


def _evict(con: sqlite3.Connection, directory: str, *, limit: int, page_size: int) -> None:
    """Delete the oldest stored rows of either table (value files with theirs) until the
    index and the files take ``limit`` bytes at most."""
    for _ in range(_EVICT_STEPS):
        if _volume_of(con, page_size) <= limit:
            return
        oldest = con.execute(f"SELECT stored FROM {TABLE} ORDER BY rowid LIMIT 1").fetchone()
        file = con.execute("SELECT rowid, filename, store_time FROM Cache "
                           "ORDER BY store_time LIMIT 1").fetchone()
        if oldest is None and file is None:
            return
        if file is None or (oldest is not None and oldest[0] <= file[2]):
            bound = float("inf") if file is None else file[2]
            con.execute(f"DELETE FROM {TABLE} WHERE rowid IN (SELECT rowid FROM {TABLE} "
                        f"WHERE stored <= ? ORDER BY rowid LIMIT {_EVICT})", (bound,))
        else:  # diskcache's triggers account for the row; the file goes with it
            con.execute("DELETE FROM Cache WHERE rowid = ?", (file[0],))
            _remove_files(directory, [file[1]])


def _remove_files(directory: str, filenames: Iterable[str | None]) -> None:
    for filename in filenames:
        if filename is not None:
            with contextlib.suppress(OSError):  # another process removed it first
                os.remove(os.path.join(directory, filename))


def _size(encoded: Encoded) -> int:
    """``encoded.nbytes`` without building the header (magic, count, then a length per frame)."""
    return 8 + 8 * len(encoded.frames) + sum(frame.nbytes for frame in encoded.frames)


def _volume_of(con: sqlite3.Connection, page_size: int) -> int:
    """The index's bytes plus the value files' (diskcache's ``volume``, on ``con``)."""
    (pages,) = con.execute("PRAGMA page_count").fetchone()
    (files,) = con.execute("SELECT value FROM Settings WHERE key = 'size'").fetchone()
    return int(pages) * page_size + int(files)


def _value_files(directory: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(directory), "*", "*.val"))


def _load_meta(head: bytes) -> Meta:
    """A row's metadata; :class:`CorruptEntryError` when it is not a JSON object."""
    try:
        meta = json.loads(head)
    except ValueError as e:
        raise CorruptEntryError(f"metadata is not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CorruptEntryError("metadata is not a JSON object")
    return meta
