"""Damaging real SQLite files the way a failing disk or a bad sync does, for several test modules."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

GARBAGE = b"this is not an SQLite file " * 8


def damage(path: Path, at: int = 0) -> None:
    """Write garbage over the file from byte ``at`` to its end (at least ``GARBAGE`` once)."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(GARBAGE * max(1, (os.path.getsize(path) - at) // len(GARBAGE)))


def fold_wal(path: Path) -> None:
    """Checkpoint the file's WAL into it and remove the WAL, as the last clean close does."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def set_aside(path: Path) -> list[Path]:
    """The copies of ``path`` moved aside as damaged (their -wal and -shm siblings left out)."""
    return [p for p in path.parent.glob(f"{path.name}.damaged-*")
            if not p.name.endswith(("-wal", "-shm"))]
