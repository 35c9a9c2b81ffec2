"""Re-checking a memoised code fingerprint (``fingerprint.py``): what its walk read, read again.

A fingerprint's walk records a *check* for everything it read: how it read it
(an item of a namespace, an attribute, a class's own item or its attribute names,
the identities of several names, a function's own attributes), from what, the
object it found and, for a mutable value, its digest. A warm request re-reads
every check (identity tests, and a new digest for the mutable values), so editing
or rebinding anything the code reaches is seen without walking the code again.

The walk and the checks share this thread's stack of fingerprints in progress: a
value re-hashed here may reach code whose fingerprint is being computed or checked.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lazyflow.errors import HashingError
from lazyflow.keys.hashing import hash_value

__all__ = ["ATTR", "CLASS_ITEM", "CLASS_KEYS", "FILE", "FUNC_ATTRS", "ITEM", "MISSING", "NAMES",
           "SELF", "Check", "attributes_of", "file_signature", "in_progress", "still_valid"]

# how a check re-reads what the walk read
ITEM, ATTR, CLASS_ITEM, CLASS_KEYS, SELF, NAMES, FUNC_ATTRS, FILE = range(8)
Check = tuple[int, Any, Any, Any, "str | None"]
"""(how, holder, name, the object read, its digest when it must be re-hashed)"""
MISSING = object()
"""What a check read where nothing was (a global defined later is a change)."""

_LOCAL = threading.local()


_LOCAL = threading.local()


def file_signature(path: str) -> tuple[int, ...] | None:
    """What changes when a file changes, read by one ``stat`` (size, modification and change
    times, inode, device: an edit that puts the old mtime back changes the ctime), or
    ``None`` when nothing is there."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_mode


def in_progress() -> list[list[Any]]:
    """This thread's stack of ``[object, tainted]``: fingerprints being computed or checked."""
    stack: list[list[Any]] | None = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    return stack


def attributes_of(func: Any) -> dict[str, Any]:
    """``func.__dict__`` without dunders (``__wrapped__``, ``__signature__``: metadata that
    tools set, not data the code reads; what ``__wrapped__`` names is walked)."""
    found: dict[str, Any] = func.__dict__
    if not found:
        return found
    return {k: v for k, v in found.items() if not (k.startswith("__") and k.endswith("__"))}


def _read(how: int, holder: Any, name: Any) -> Any:
    """What ``holder`` holds under ``name``, read as the check ``how`` says."""
    if how == ITEM:
        return holder.get(name, MISSING)
    if how == ATTR:
        return getattr(holder, name, MISSING)
    if how == CLASS_ITEM:
        return holder.__dict__.get(name, MISSING)
    if how == CLASS_KEYS:
        return tuple(holder.__dict__)
    return holder


def still_valid(owner: Any, checks: tuple[Check, ...]) -> bool:
    """Re-read every check; values are re-hashed with ``owner`` in progress, as in the walk."""
    frame: list[Any] | None = None
    stack = in_progress()
    try:
        for how, holder, name, value, digest in checks:
            # the common reads inline: this loop is a warm request's whole cost
            if how == ITEM:
                if holder.get(name, MISSING) is not value:
                    return False
            elif how == ATTR:
                if getattr(holder, name, MISSING) is not value:
                    return False
            elif how == FUNC_ATTRS:
                if not digest:  # it had none: any set since is a change
                    if holder.__dict__ and attributes_of(holder):
                        return False
                    continue
                value = attributes_of(holder)
            elif how == NAMES:  # identity of each (tuple equality tests identity first)
                if tuple(map(holder.get, name)) != value:
                    return False
                continue
            elif how == CLASS_KEYS:
                if tuple(holder.__dict__) != value:
                    return False
                continue
            elif how == FILE:  # a file the code reads by a constant path: one stat
                if file_signature(name) != value:
                    return False
                continue
            elif _read(how, holder, name) is not value:
                return False
            if digest is not None:  # by hash_value: a walk that met a queue was not memoised
                if frame is None:
                    frame = [owner, False]
                    stack.append(frame)
                try:
                    if hash_value(value) != digest:
                        return False
                except HashingError:
                    return False
        return True
    finally:
        if frame is not None:
            stack.pop()
