"""Damaged or vanished SQLite files: recognise them, set them aside, go on with a fresh one.

Design note
-----------
Policy. The disk tier's index (``cache.db``, diskcache's SQLite database) and
the run history (``history.sqlite``) are SQLite files a user owns. When one is
damaged (a disk error, a sync tool, garbage written over its first bytes),
every statement fails with ``SQLITE_NOTADB`` ("file is not a database") or
``SQLITE_CORRUPT`` ("database disk image is malformed"), and would keep
failing until the user finds and deletes the folder. Instead its owner calls
:func:`set_aside`: the file is *renamed*, with its ``-wal``, ``-shm`` and
``-journal`` siblings, to ``<name>.damaged-<timestamp>`` in the same folder
(never deleted: it may hold rows worth recovering with ``sqlite3 FILE
.recover``), then the owner opens a fresh file under the original name and
warns once, naming both paths.

Before anything moves, :func:`is_damaged` confirms the damage on a fresh,
read-only connection. A connection opened before another process set the file
aside still points at the renamed file and fails the same way; it must reopen,
not move the healthy file that took the old one's place. Two processes that
confirm at the same instant may both move: the second then moves a fresh,
nearly empty file aside, which loses at most the entries written in between
and never a user's data.

The owner closes its own connection to the damaged file *before* moving it:
SQLite removes a database's ``-wal`` and ``-shm`` by name when the last
connection closes, and after the move those names are the fresh file's. A
connection another process opened before the damage cannot be closed from
here; if it outlives the move, the fresh file may be damaged in turn, and is
then found and set aside the same way.

:func:`recovering` wraps the methods of an owner (``DiskTier``,
``history.Store``): a damage error sets the file aside once (the owner's
``_recover``) and the call runs again on the fresh file.

Vanished. A user may delete the folder holding the file (``rm -rf .lazyflow``)
or swap it for another while a process has it open. On POSIX a connection
opened before keeps reading and writing the unlinked file (its inode lives on
until the last connection closes), so nothing fails there: everything written
would be lost. A connection opened *after* fails instead, with "unable to open
database file" (the folder is gone) or "no such table" (the connection made a
new, empty file): :func:`is_gone` recognises those, and :func:`recovering`
hands them to the owner's ``_recover`` like damage. The owner tells the file
it opened from the one at its path by :func:`identity` (device and inode,
taken when it opened it), and where its old connections would never fail, it
compares them once in a while (the disk tier once per run, the history once
per commit): never on every statement. Either way it reopens the file at its
path (a fresh one if none), once, however many threads noticed, and the call
runs again. Entries are content-addressed, so a file swapped for another
flow's serves only what its keys address.

Rejected: repairing in place (``.recover`` is slow on a large index and may
resurrect stale rows; for a cache, recomputing is always correct) and deleting
the file (silent loss of what the user may want back).
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from lazyflow.errors import LazyflowError

__all__ = ["DamagedFileError", "identity", "is_damage", "is_damaged", "is_gone", "recovering",
           "set_aside"]

_NOTADB = 26
_CORRUPT = 11
_CANTOPEN = 14
_READONLY_DBMOVED = 8 | (4 << 8)  # a rollback-journal database renamed or unlinked while open
_SIBLINGS = ("-wal", "-shm", "-journal")

P = ParamSpec("P")
R = TypeVar("R")


class DamagedFileError(LazyflowError, OSError):
    """A damaged SQLite file could not be moved aside (permissions, a file lock)."""


def is_damage(error: BaseException) -> bool:
    """Whether ``error`` says the database file itself is damaged (not locked or busy).

    >>> is_damage(sqlite3.DatabaseError("file is not a database"))
    True
    >>> is_damage(sqlite3.OperationalError("database is locked"))
    False
    """
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF in (_NOTADB, _CORRUPT)  # extended codes keep the primary in the low byte
    text = str(error)
    return "file is not a database" in text or "malformed" in text


def is_gone(error: BaseException) -> bool:
    """Whether ``error`` says the database's file or its tables are not there: the folder
    holding it was deleted, or the file replaced by an empty one, under an open owner.

    >>> is_gone(sqlite3.OperationalError("no such table: Settings"))
    True
    >>> is_gone(sqlite3.OperationalError("database is locked"))
    False
    """
    if not isinstance(error, sqlite3.OperationalError):
        return False
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int) and (code & 0xFF == _CANTOPEN or code == _READONLY_DBMOVED):
        return True
    text = str(error)
    return text.startswith("no such table") or "unable to open database file" in text


def identity(path: str) -> tuple[int, int] | None:
    """The file at ``path`` as (device, inode), ``None`` when there is none: a file
    deleted, or replaced by another, under an open connection has another identity."""
    try:
        found = os.stat(path)
    except OSError:  # gone, or its folder is
        return None
    return found.st_dev, found.st_ino


def is_damaged(path: str) -> bool:
    """Whether the SQLite file at ``path`` fails a quick integrity check on a fresh connection.

    A missing file, or one locked by another process, is not damaged.
    """
    uri = pathlib.Path(os.path.abspath(path)).as_uri() + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as con:
            rows = con.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.DatabaseError as e:
        return is_damage(e)
    return rows != [("ok",)]


def set_aside(path: str) -> str:
    """Rename the file at ``path`` and its SQLite siblings to ``<path>.damaged-<timestamp>``.

    Returns the new path. Raises :class:`DamagedFileError` saying what to do
    when the file cannot be moved.
    """
    target = _free_name(f"{path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        os.rename(path, target)
    except OSError as e:
        raise DamagedFileError(
            f"{path} is damaged and could not be moved aside ({type(e).__name__}: {e}); "
            "move or delete it yourself (nothing in it can be read)") from e
    for suffix in _SIBLINGS:  # they belong to the damaged file: a fresh one must not read them
        with contextlib.suppress(FileNotFoundError):
            os.rename(path + suffix, target + suffix)
    return target


class _Owner(Protocol):
    def _recover(self, broken: Any, error: sqlite3.DatabaseError) -> None: ...


Owner = TypeVar("Owner", bound=_Owner)


def recovering(handle: str) -> Callable[[Callable[Concatenate[Owner, P], R]],
                                        Callable[Concatenate[Owner, P], R]]:
    """Decorate a method so that a damaged or vanished database is recovered once and the
    call retried.

    ``handle`` names the attribute holding the open database (a connection, a
    ``diskcache.Cache``): the owner's ``_recover(broken, error)`` receives the
    handle the call used, so threads that failed together recover once. A call
    that failed while another thread replaced the handle (its connection closed
    under it) runs again on the new one.
    """
    def decorate(method: Callable[Concatenate[Owner, P], R]) -> Callable[Concatenate[Owner, P], R]:
        @functools.wraps(method)
        def call(self: Owner, /, *args: P.args, **kwargs: P.kwargs) -> R:
            broken = getattr(self, handle)
            try:
                return method(self, *args, **kwargs)
            except sqlite3.DatabaseError as e:
                if is_damage(e) or is_gone(e):
                    self._recover(broken, e)
                elif getattr(self, handle) is broken:
                    raise
            return method(self, *args, **kwargs)

        return call

    return decorate


def _free_name(base: str) -> str:
    candidate, n = base, 1
    while any(os.path.lexists(candidate + s) for s in ("", *_SIBLINGS)):
        n += 1
        candidate = f"{base}-{n}"
    return candidate
