"""The disk tier's index: the SQLite database of a cache directory, its tables, each
thread's connection, batched writes, eviction, and recovery when the file is damaged.

Design note
-----------
Tables. Every key is one row of the index (``cache.db``, shared with
diskcache). Inline entries (values under ``min_file_size``), and every
record, are rows of lazyflow's own table ``LazyflowEntries`` (key, stored,
blob, trace, latest), committed in batches (:meth:`DiskIndex.write`). A value
in a file (``disk_entries.py``) goes through diskcache as one row of its
``Cache`` table naming the file. Reading metadata is one SELECT over both
tables. A record an entry's row restates (its trace and latest records,
``disk_entries.py``) is the row's ``trace`` or ``latest`` column, each with a
partial index: a lookup finds it in the same SELECT, the last committed row
naming it winning (disk layout 3; a layout-2 table gets the columns when it
opens, its rows unchanged). Deleting or moving an entry's row writes the
records it restated as rows of their own first (``_drop_row``); a row
replaced in a batch keeps the keys it restated unless the new one restates
others (``_INSERT``).

Why a table of our own: a computed node wrote three rows (value, trace record,
latest record; one since layout 3), and a 1,000-node chain spent 86% of its
first run in those writes, one diskcache commit each (~350 µs per node). Inside one transaction a
``diskcache.Cache.set`` still costs ~30 µs here (18 µs with culling off) and an
insert into diskcache's table 7-11 µs (its triggers and three indexes), against
~3 µs for a batch insert into a table of three columns. A row keeps the layout
of diskcache's inline rows, so a row of either table parses the same, and the
older layout (every row in ``Cache``, as in ``tests/fixtures/cache-v2``) is
still read: a key is looked up in both, and when both hold it, the row stored
last wins. Writing a key removes its row from the other table in the same step,
so normally only one exists. The index reads diskcache's columns (``key``,
``raw``, ``mode``, ``filename``, ``value``, ``store_time``; checked when it
opens) and deletes its rows, whose accounting diskcache's triggers keep; it
never inserts into that table itself.

Limit. ``size_limit`` covers the index file (whose pages hold the inline rows)
plus the value files, as diskcache measures it (``volume``). After each batch,
and before each value file, the oldest stored entries of either table go until
the tier fits; diskcache then rarely needs to cull on its own.

Atomicity. A batch is one transaction: a process killed mid-batch loses that
batch (writes of the last ~50 ms at most, or since the engine last waited on a
node) and nothing that was committed. A value file is complete before the row
that points at it is committed. A concurrent writer of the same key replaces
the row (and diskcache deletes the older file), so one valid entry remains. No
fsync (SQLite's ``synchronous=NORMAL``, as diskcache): the checksum in the
metadata is verified on every read, so a torn write after a power cut is
detected and recomputed instead of being served (``read_encoded`` raises, the
hierarchy drops the entry).

Connections. Each thread uses its own (an SQLite connection must not be used
by two threads at once, nor cross a fork), with diskcache's per-connection
settings; a forked child opens new ones.

Damage. A damaged index (``cache.db`` overwritten, "file is not a database"
or "malformed") is found when the index opens or when a statement first fails
(the tier's methods are wrapped in ``quarantine.recovering``, which calls
:meth:`DiskIndex.recover`); ``quarantine.py`` moves it aside to
``cache.db.damaged-<timestamp>``, and the index goes on fresh and empty and
warns once. The value files the old index pointed at are orphans then: never
served (no row names them) and removed by :meth:`DiskIndex.clear`, as are
those of interrupted writes.

Vanished. A connection opened before its folder was deleted or swapped fails
nothing: it goes on with the unlinked file, and every write is lost. So the
index keeps the (device, inode) of the file it opened, and the first statement
after :meth:`DiskIndex.revalidate` (called as each run ends) compares it with
the path's: one ``stat`` a run, none a lookup. A connection opened later fails
(``quarantine.is_gone``) and ``recovering`` hands it to :meth:`DiskIndex.recover`
as damage. Either way the index reopens the path's file (a fresh one if none),
warns once, and the statement runs there. Entries are content-addressed, so an
index swapped for another flow's serves only what its keys address.

Lookups together (:meth:`DiskIndex.present`): one statement per 500 keys
probes every index for each key, ~1 µs a key against ~4 µs (~10 µs during a
run) for a lookup of its own. ``IN (...)`` lists cost ~3x as much (each builds
an ephemeral table).

Rejected: for restated records, a table of names pointing at rows (an insert
per name again, and a join per lookup); keeping at most one row per record key
by clearing older rows' columns on every write (an UPDATE per record, where a
lookup's ``ORDER BY rowid DESC LIMIT 1`` costs nothing). Also rejected: a
sidecar metadata entry per key (two rows that eviction could
separate), inserting our rows into diskcache's ``Cache`` table ourselves (2-3x
the cost of our own table, and its bookkeeping is diskcache's to change), and
a table keyed by the key itself (``WITHOUT ROWID``: every insert at a random
place moved whole rows, 5-6 µs).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import diskcache

from lazyflow.cache.base import Meta
from lazyflow.cache.disk_entries import (
    BINARY,
    RESTATED,
    Entry,
    EntryDisk,
    Row,
    load_meta,
    restated,
)
from lazyflow.cache.quarantine import identity, is_damage, is_damaged, set_aside
from lazyflow.cache.serialize import Encoded, dump_meta, stamp
from lazyflow.errors import CacheWarning, warn

__all__ = ["LAYOUT", "TABLE", "Buffered", "DiskIndex", "Pending", "Restated"]

LAYOUT = 3
"""The disk layout this index writes (``docs/cache-format.md``: 1, every row in diskcache's
table; 2, lazyflow's own table; 3, its ``trace`` and ``latest`` columns). Told by the
tables and columns an index has, so not stored; each layout reads the ones before it."""

TABLE = "LazyflowEntries"
"""lazyflow's own table in the index: inline entries and records (``docs/cache-format.md``)."""
# A rowid table: rows are appended in commit order (a replaced row gets a new rowid), so
# rowid order is eviction order without an index, and only the small key index takes
# random inserts (a table keyed by the random key itself moved whole rows around: 5-6 µs
# per insert against 2.5 µs here).
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT NOT NULL UNIQUE, "
           "stored REAL NOT NULL, blob BLOB NOT NULL, trace TEXT, latest TEXT)",)
# The restated records' columns (disk layout 3), added to a layout-2 table when it opens;
# partial indexes: only the rows that restate a record pay for them.
_COLUMNS = tuple(RESTATED)
_COLUMN_INDEXES = tuple(f"CREATE INDEX IF NOT EXISTS {TABLE}_{column} ON {TABLE} ({column}) "
                 f"WHERE {column} IS NOT NULL" for column in _COLUMNS)
# diskcache's columns this index reads (checked when it opens)
_CACHE_COLUMNS = frozenset({"rowid", "key", "raw", "store_time", "mode", "filename", "value"})
# One statement looks a key up in our table (as a row's key, then as a record a row
# restates: the last committed row for it) and in diskcache's (values in files, and every
# entry of the older layout); ``stored`` decides if several hold it.
_FIND = (f"SELECT blob, NULL, stored, NULL, NULL FROM {TABLE} WHERE key = ?1"
         + "".join(f" UNION ALL SELECT * FROM (SELECT blob, NULL, stored, '{column}', key "
                   f"FROM {TABLE} WHERE {column} = ?1 ORDER BY rowid DESC LIMIT 1)"
                   for column in _COLUMNS)
         + " UNION ALL SELECT value, filename, store_time, NULL, NULL FROM Cache "
         f"WHERE key = ?1 AND raw = 1 AND mode = {BINARY}")
# A replaced row keeps the records it restated unless the new one restates others
# (``coalesce`` looks the old row up only then).
_INSERT = (f"INSERT OR REPLACE INTO {TABLE} (key, stored, blob, trace, latest) VALUES "
           f"(?1, ?2, ?3, coalesce(?4, (SELECT trace FROM {TABLE} WHERE key = ?1)), "
           f"coalesce(?5, (SELECT latest FROM {TABLE} WHERE key = ?1)))")
_CHUNK = 500  # keys per "IN (...)": well under SQLite's limit on bound variables
_EVICT = 64  # rows of ours evicted per step (they are small: under min_file_size)
_EVICT_STEPS = 1000  # steps per cull at most: an index that never shrinks cannot loop
_TIMEOUT = 60.0  # seconds to wait for another writer's lock, as diskcache does



@dataclass(slots=True)
class Pending:
    """A buffered row: its blob, when it was stored, the stamped metadata of an entry
    (``None`` for a record), and the keys of the records it restates (``RESTATED``)."""

    blob: bytes
    stored: float
    meta: Meta | None = None
    trace: str | None = None
    latest: str | None = None


@dataclass(frozen=True, slots=True)
class Restated:
    """A buffered record that the buffered row of ``entry`` restates in ``column``."""

    entry: str
    row: Pending
    column: str


Buffered = Pending | Restated
"""What a batch holds under a key."""


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


class DiskIndex:
    """The SQLite index of a disk tier's directory: both tables, eviction, recovery.

    ``cache`` is the open ``diskcache.Cache`` (a new one after :meth:`recover`);
    ``connections`` gives each thread its own connection for lazyflow's statements.

    >>> import tempfile
    >>> index = DiskIndex(tempfile.mkdtemp(), size_limit=10**9, min_file_size=2**16)
    >>> index.write({"k": Pending(b'{"digest": "d"}\\n', 1.0)})
    >>> index.row("k").blob, index.keys()
    (b'{"digest": "d"}\\n', ['k'])
    """

    def __init__(self, directory: str, *, size_limit: int, min_file_size: int) -> None:
        self.directory = directory
        self.size_limit = size_limit
        self.min_file_size = min_file_size
        self.connections = _Connections(self.path)
        self.page_size = 4096
        self._recovery = threading.Lock()
        self._identity: tuple[int, int] | None = None  # of the file opened (quarantine.identity)
        self._unverified = False  # the next statement checks the path still holds that file
        _INDEXES.add(self)
        try:
            self.cache = self._open()
        except sqlite3.DatabaseError as e:
            if not is_damage(e):
                raise
            self._replace(e)

    @property
    def path(self) -> str:
        """The SQLite file diskcache keeps in the directory."""
        return os.path.join(self.directory, diskcache.core.DBNAME)

    def row(self, key: str) -> Row | None:
        """The committed row under ``key``, from either table, or the row restating the
        record ``key`` (the newer if several)."""
        rows = self._connection().execute(_FIND, (key,)).fetchall()
        if not rows:
            return None
        blob, filename, _, column, entry = rows[0] if len(rows) == 1 \
            else max(rows, key=lambda r: r[2] or 0.0)
        return Row(bytes(blob), None if filename is None
                   else os.path.join(self.directory, filename), column, entry or "")

    def present(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` committed in either table, those of records rows restate
        included: one statement per :data:`_CHUNK` keys (~1 µs a key, against ~4 µs for
        a lookup of its own)."""
        con = self._connection()
        found: set[str] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            found.update(key for (key,) in con.execute(_present(len(chunk)), chunk))
        return found

    def keys(self) -> list[str]:
        """The keys committed in either table, those of the records rows restate included."""
        restating = "".join(f" UNION SELECT {column} FROM {TABLE} WHERE {column} IS NOT NULL"
                            for column in _COLUMNS)
        rows = self._connection().execute(
            f"SELECT key FROM {TABLE}{restating} UNION SELECT key FROM Cache WHERE raw = 1"
        ).fetchall()
        return [key for (key,) in rows if isinstance(key, str)]

    def volume(self) -> int:
        """Bytes used: the index's pages plus every value file (diskcache's ``volume``)."""
        return _volume_of(self._connection(), self.page_size)

    # ----------------------------------------------------------------- writes

    def write(self, rows: dict[str, Buffered]) -> None:
        """Commit rows to lazyflow's table in one transaction, then evict to fit the limit.

        A :class:`Restated` record is no row: the row it names holds its key."""
        con = self._connection()
        with _transaction(con):
            replaced = _rows_in_cache(con, list(rows))  # a key's row moves to our table
            if replaced:
                con.executemany("DELETE FROM Cache WHERE rowid = ?",
                                [(rowid,) for rowid, _ in replaced])
            con.executemany(_INSERT, [(key, row.stored, row.blob, row.trace, row.latest)
                                      for key, row in rows.items() if type(row) is Pending])
        _remove_files(self.directory, (filename for _, filename in replaced))
        self._cull(con)

    def put_file(self, key: str, encoded: Encoded, meta: Meta) -> None:
        """Write a large value to its file and commit its row in diskcache's table."""
        con = self._connection()
        if con.execute(f"SELECT 1 FROM {TABLE} WHERE key = ?", (key,)).fetchone():
            with _transaction(con):
                _drop_row(con, key)
        self._cull(con, room=encoded.nbytes)
        self.cache.set(key, Entry(stamp(meta, encoded, checksum=False), encoded), retry=True)

    def delete(self, key: str) -> None:
        """Remove the committed row under ``key`` from either table, and its file; as a
        record a row restates, only that record (the entry stays)."""
        con = self._connection()
        with _transaction(con):
            _drop_row(con, key)
            for column in _COLUMNS:
                con.execute(f"UPDATE {TABLE} SET {column} = NULL WHERE {column} = ?", (key,))
        self.cache.delete(key, retry=True)

    def forget_if_unchanged(self, key: str, row: Row) -> None:
        """Drop a row whose value file was deleted behind diskcache's back."""
        with self.cache.transact(retry=True):
            current = self.cache.get(key, retry=True)
            if isinstance(current, Row) and current.path == row.path:
                self.cache.delete(key, retry=True)

    def clear(self) -> None:
        """Remove every committed row and value file, orphaned value files included."""
        self._connection().execute(f"DELETE FROM {TABLE}")
        self.cache.clear(retry=True)
        self._remove_orphans()

    def revalidate(self) -> None:
        """Have the next statement first check that the directory still holds the index
        this one opened, and reopen it if not (the tier calls it as each run ends)."""
        self._unverified = True

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, once the index is checked if :meth:`revalidate` asked."""
        if self._unverified:
            self._verify()
        return self.connections.get()

    def _cull(self, con: sqlite3.Connection, room: int = 0) -> None:
        """Evict the oldest stored entries until ``room`` more bytes fit in the limit."""
        _evict(con, self.directory, limit=self.size_limit - room, page_size=self.page_size)

    # ----------------------------------------------------------------- opening

    def _open(self) -> diskcache.Cache:
        # Built in two steps so that a constructor failing on a damaged index closes its
        # connection before the file is moved aside: SQLite removes a database's -wal and
        # -shm *by name* when its last connection closes, which after the move would be
        # the fresh index's.
        cache = diskcache.Cache.__new__(diskcache.Cache)
        try:
            cache.__init__(self.directory, size_limit=self.size_limit, disk=EntryDisk,
                           disk_min_file_size=self.min_file_size,
                           eviction_policy="least-recently-stored")
            self.connections.pragmas = {"synchronous": int(cache.sqlite_synchronous),
                                        "cache_size": int(cache.sqlite_cache_size),
                                        "mmap_size": int(cache.sqlite_mmap_size)}
            self.page_size = int(cache._page_size)
            self._create_table()
        except BaseException:
            with contextlib.suppress(Exception):
                cache.close()
            raise
        self._identity = identity(self.path)
        return cache

    def _create_table(self) -> None:
        """Create lazyflow's table if missing; check diskcache's columns this index reads."""
        with contextlib.closing(self.connections.connect()) as con:
            missing = _CACHE_COLUMNS - {row[1] for row in con.execute("PRAGMA table_info(Cache)")}
            if missing:
                raise RuntimeError(
                    f"the disk cache index {self.path} has a 'Cache' table without the "
                    f"columns {sorted(missing)}: it was written by a diskcache "
                    f"this lazyflow does not know (installed: {diskcache.__version__}); "
                    "install diskcache 5.x or use another cache directory")
            for statement in _SCHEMA:
                con.execute(statement)
            _add_columns(con)

    def forked(self) -> None:
        """In a forked child: new connections and locks (see ``_forget_connections``)."""
        self.connections.forked()
        self._recovery = threading.Lock()

    # ----------------------------------------------------------------- damage

    def recover(self, broken: diskcache.Cache, error: sqlite3.DatabaseError) -> None:
        """Replace the index a statement found damaged (once, when threads fail together)."""
        with self._recovery:
            if self.cache is not broken:  # another thread recovered while this one failed
                return
            broken.close()
            self._replace(error)

    def _verify(self) -> None:
        """Reopen the index if the file at its path is not the one opened (the folder
        deleted or swapped): connections opened before would go on with the old one."""
        self._unverified = False
        if identity(self.path) == self._identity:
            return
        with self._recovery:
            if identity(self.path) == self._identity:  # another thread reopened it meanwhile
                return
            self.cache.close()
            self._replace(None)

    def _replace(self, error: sqlite3.DatabaseError | None) -> None:
        """Open the index at the path afresh: a damaged one set aside first, a vanished one
        (deleted or replaced since it was opened) reopened; then warn once."""
        self.connections.close()  # before the move: see _open
        opened, found = self._identity, identity(self.path)
        # not damaged on a fresh connection: another process set it aside already
        moved = set_aside(self.path) if is_damaged(self.path) else None
        self.cache = self._open()
        if moved is None and opened is not None and found != opened:
            self._warn_vanished(replaced=found is not None)
        if moved is not None:
            warn(
                f"the disk cache index {self.path} is damaged ({error}); it was moved "
                f"to {moved} and a fresh, empty index is used, so cached values will be "
                "recomputed. The value files the old index pointed at are orphans: "
                f"`lazyflow cache clear --tier disk --cache-dir {self.directory}` removes "
                f"them; delete {moved} once you no longer need it", CacheWarning)

    def _warn_vanished(self, *, replaced: bool) -> None:
        if replaced:
            warn(f"the disk cache index {self.path} was replaced while this process had it "
                 "open (its folder swapped, or another process started a fresh one); the "
                 "index now there is used, and values are recomputed as needed", CacheWarning)
        else:
            warn(f"the disk cache folder {self.directory} was deleted while this process had "
                 "it open; a fresh cache was started there, and values are recomputed as "
                 "needed", CacheWarning)

    def _remove_orphans(self) -> None:
        """Delete value files no row points at (a set-aside index's, interrupted writes')."""
        kept = {os.path.join(self.directory, filename) for (filename,) in self.connections.get().execute(
            "SELECT filename FROM Cache WHERE filename IS NOT NULL")}  # concurrent writers' too
        for path in _value_files(self.directory):
            if path not in kept:
                with contextlib.suppress(OSError):  # another process removed it first
                    os.remove(path)


_INDEXES: weakref.WeakSet[DiskIndex] = weakref.WeakSet()


def _forget_connections() -> None:
    for index in list(_INDEXES):
        index.forked()


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


def _present(count: int) -> str:
    """The statement of :meth:`DiskIndex.present` for ``count`` keys: a probe of each
    index per key (``IN`` lists cost ~3x as much: an ephemeral table each)."""
    return (f"SELECT w.column1 FROM (VALUES {','.join(['(?)'] * count)}) AS w WHERE "
            + " OR ".join(f"EXISTS (SELECT 1 FROM {TABLE} WHERE {column} = w.column1)"
                          for column in ("key", *_COLUMNS))
            + " OR EXISTS (SELECT 1 FROM Cache WHERE key = w.column1 AND raw = 1)")


def _add_columns(con: sqlite3.Connection) -> None:
    """Give a table of disk layout 2 the columns of layout 3, and their indexes."""
    present = {row[1] for row in con.execute(f"PRAGMA table_info({TABLE})")}
    for column in _COLUMNS:
        if column not in present:
            try:
                con.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as e:  # another process added it meanwhile
                if "duplicate column" not in str(e):
                    raise
    for statement in _COLUMN_INDEXES:
        con.execute(statement)


def _drop_row(con: sqlite3.Connection, key: str) -> None:
    """Delete our row under ``key`` (in a transaction); the records it restated become
    rows of their own, so deleting one key leaves the others."""
    found = con.execute(f"SELECT stored, blob, trace, latest FROM {TABLE} WHERE key = ?",
                        (key,)).fetchone()
    if found is None:
        return
    stored, blob, *records = found
    con.execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,))
    if not any(records):
        return
    try:
        meta = load_meta(bytes(blob).partition(b"\n")[0])
    except ValueError:  # unreadable: its records would be as wrong as it
        return
    for column, record in zip(_COLUMNS, records, strict=True):
        kept = None if record is None else restated(column, key, meta)
        if kept is not None:
            con.execute(_INSERT, (record, stored, dump_meta(kept) + b"\n", None, None))


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


def _volume_of(con: sqlite3.Connection, page_size: int) -> int:
    """The index's bytes plus the value files' (diskcache's ``volume``, on ``con``)."""
    (pages,) = con.execute("PRAGMA page_count").fetchone()
    (files,) = con.execute("SELECT value FROM Settings WHERE key = 'size'").fetchone()
    return int(pages) * page_size + int(files)


def _value_files(directory: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(directory), "*", "*.val"))
