"""Records on a shared remote: compare-and-swap against the version read, three-way merges.

Design note
-----------
Policy. A record (metadata only: a trace record, a lazy node's trace list)
can be rewritten, unlike a value's entry, and colleagues rewrite the same
ones: a lazy node's trace list is read, extended and written back. Written
blindly, the last writer would silently drop what another added. So a
record is written *conditionally on what this process last knew of it*
(:class:`Version`): create-only when it read none, else only over the
version it read (S3 ``If-Match``). When the condition fails, a colleague
wrote in between: the writer reads theirs and merges three ways
(:func:`merge`) against what it had read, then tries again (at most
:data:`ATTEMPTS` times):

* a field only one side changed takes that side's value;
* when both changed only list fields (a trace list), the lists are merged
  as append-only sets: theirs, then the items this writer added;
* otherwise (both changed a plain field: two trace records naming
  different entries) the colleague's record is kept whole, it is as valid.

A record this process never read (the environment record, written without
looking when the entry meant to carry the description was kept out:
``remote_environment.py``) is written create-only, and a colleague's existing
record is kept as it is. Nothing is written when the record already says
what this process would write, so re-linking an unchanged trace costs no
request.

Rejected: per-writer objects (``<key>.<writer>``), which a reader could only
find by listing; and a lock object, which a crashed writer leaves behind.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import lazyflow.cache.serialize as serialize
from lazyflow.cache.remote_entries import STAMPS, EntryObject, payload
from lazyflow.cache.remote_objects import PreconditionFailed
from lazyflow.cache.serialize import encoding_of

__all__ = ["ATTEMPTS", "Recent", "Version", "merge", "said", "write_record"]

ATTEMPTS = 8
"""Compare-and-swap attempts before a record update is given up (with a warning)."""

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()

Said = tuple[Any, Any]
"""What a record says: its unstamped metadata and the checksum of the entry it carries."""


class Recent(Generic[K, V]):
    """A bounded, thread-safe mapping that forgets the least recently used (the tier's
    short memories)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value remembered for ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, forgetting the oldest past :attr:`size`."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Forget ``key``; its value, if any."""
        with self._lock:
            return self._items.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()


@dataclass(frozen=True, slots=True)
class Version:
    """What this process last knew of an entry object: absent, or present at ``version``
    (``None``: present, version unknown) saying ``said`` (records)."""

    version: str | None
    exists: bool
    said: Said | None = None


def said(entry: EntryObject) -> Said:
    """What a record says, stamps aside: two writes saying the same need not both happen."""
    carried = entry.carried.meta.get("checksum") if entry.carried is not None else None
    return payload(entry.meta), carried


def merge(base: dict[str, Any] | None, ours: dict[str, Any],
          theirs: dict[str, Any]) -> dict[str, Any] | None:
    """Three-way merge of record fields (stamps aside); ``None``: keep ``theirs`` whole.

    >>> merge({"traces": [1]}, {"traces": [1, 2]}, {"traces": [1, 3]})
    {'traces': [1, 3, 2]}
    >>> merge({"key": "a"}, {"key": "b"}, {"key": "c"}) is None
    True
    """
    was_fields = base or {}
    merged = dict(theirs)
    for name in sorted(ours.keys() | theirs.keys()):
        mine = ours.get(name, _MISSING)
        their = theirs.get(name, _MISSING)
        was = was_fields.get(name, _MISSING)
        if mine in (was, their):  # we changed nothing here, or agree
            continue
        if their == was:  # only we changed it
            if mine is _MISSING:
                merged.pop(name, None)
            else:
                merged[name] = mine
            continue
        if isinstance(mine, list) and isinstance(their, list):
            added = [item for item in mine if not (isinstance(was, list) and item in was)]
            merged[name] = [item for item in their if item not in added] + added
            continue
        return None
    return merged


def write_record(write: Callable[..., str | None],
                 read: Callable[[], tuple[EntryObject, str | None] | None],
                 entry: EntryObject, base: Version | None) -> Version | None:
    """Write record ``entry`` conditionally on ``base``, merging on conflicts.

    ``write(entry, create=..., match=...)`` puts the object (raising
    :class:`PreconditionFailed`), ``read()`` fetches it afresh. Returns what
    is now known of the record, or ``None`` when a colleague's record was
    kept unread (a blind write found one). Raises :class:`RecordConflictError`
    after :data:`ATTEMPTS` conflicts.
    """
    if base is not None and base.exists and base.said == said(entry):
        return base  # it says this already
    if base is not None and base.exists and base.version is None:
        base = None  # present, version unknown: nothing to compare and swap against
    for _ in range(ATTEMPTS):
        try:
            if base is None or not base.exists:
                version = write(entry, create=True)
            else:
                version = write(entry, match=base.version)
            return Version(version, True, said(entry))
        except PreconditionFailed:
            if base is None:
                return None  # never read here: the colleague's record stays as it is
        current = read()
        if current is None:  # deleted meanwhile: create it
            base = Version(None, False)
            continue
        theirs, version = current
        now = Version(version, True, said(theirs))
        if not theirs.is_record or encoding_of(theirs.meta) not in serialize.KNOWN_ENCODINGS:
            return now  # not a record this lazyflow may merge into: left as it is
        merged = merge(base.said[0] if base.said else None, payload(entry.meta) or {},
                       payload(theirs.meta) or {})
        if merged is None or merged == payload(theirs.meta):
            return now
        entry = _rebuilt(entry, theirs, merged)
        base = now
    raise RecordConflictError(f"the record kept changing under {ATTEMPTS} attempts to update it")


class RecordConflictError(PreconditionFailed):
    """A record changed under every attempt to update it (many colleagues at once)."""


def _rebuilt(ours: EntryObject, theirs: EntryObject, merged: dict[str, Any]) -> EntryObject:
    """The merged record, with this writer's stamps and the carried entry that fits its key."""
    meta = {**merged, **{k: v for k, v in ours.meta.items() if k in STAMPS}}
    carried = ours.carried if merged.get("key") == ours.meta.get("key") else theirs.carried
    return EntryObject(meta, carried=carried)
