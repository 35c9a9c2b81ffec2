"""The memory tier: live Python objects in an LRU bounded by bytes.

Design note
-----------
Values are kept as live objects (arrays, frames and immutable values without any
serialisation), so a memory hit costs a dict lookup and, for a mutable value, a
fresh copy or view. The tier never hands out what it keeps: ``put`` keeps a private
snapshot and ``get`` hands out a copy or read-only view of it (``snapshot.py``:
immutable values as they are, arrays as read-only views, pandas objects as
copy-on-write copies, everything else unpickled afresh). So a caller changing what
it got, or a node changing its input in place, cannot change the cached value.
``owned=True`` (used when the hierarchy promotes a value it has just decoded) adopts
a value nobody else holds instead of copying it.

The budget is in bytes: a snapshot counts what it holds (the buffers of arrays and
frames, the pickle stream of the rest), an immutable value is sized by
:func:`sizeof`. When a put would exceed the budget, least recently used entries are
evicted; a value larger than the whole budget is not kept at all (and copying it
stops as soon as it is known not to fit). One lock guards the bookkeeping; it is
never held while copying, sizing or handing out a value. Entries live in three
parallel dicts (LRU order with sizes, values, metadata) rather than one dict of
tuples: a tuple per entry is one more object for the cyclic garbage collector to
walk, which cost a cold 10,000-node run more than the dicts do.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from lazyflow.cache.base import NO_VALUE, Meta
from lazyflow.cache.sizes import sizeof
from lazyflow.cache.snapshot import Snapshot, TooLarge, snapshot
from lazyflow.errors import CacheWarning, warn

__all__ = ["MemoryTier", "sizeof"]


class MemoryTier:
    """An in-process, thread-safe LRU of values bounded by ``max_bytes``.

    >>> tier = MemoryTier(max_bytes=1_000_000)
    >>> tier.put("k", [1, 2, 3], {"digest": "d"})["size"] > 0
    True
    >>> tier.get("k")
    [1, 2, 3]
    """

    name = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._sizes: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self._values: dict[str, Any] = {}  # snapshots (or immutable values themselves)
        self._metas: dict[str, Meta] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def contains(self, key: str) -> bool:
        """Whether ``key`` is held."""
        return key in self._metas

    def meta(self, key: str) -> Meta | None:
        """The entry's metadata, or ``None``."""
        return self._metas.get(key)

    def get(self, key: str) -> Any:
        """A copy or read-only view of the value under ``key``; marks it most recently used.

        Immutable values come back as they are. Changing what this returns never
        changes the value held.
        """
        return self.entry(key)[0]

    def entry(self, key: str) -> tuple[Any, Meta]:
        """:meth:`get`'s value and the metadata held with it, read together."""
        with self._lock:
            kept, meta = self._values[key], self._metas[key]
            self._sizes.move_to_end(key)
        return (kept.handout() if isinstance(kept, Snapshot) else kept), meta

    def put(self, key: str, value: Any, meta: Meta, *, owned: bool = False) -> Meta | None:
        """Keep a snapshot of ``value``; evict least recently used entries to stay in budget.

        ``owned``: nobody else holds ``value`` (it was just read from a slower tier), so
        its arrays are made read-only in place instead of copied. Returns the metadata
        held (with ``size``), or ``None`` for a value not kept: one larger than the whole
        budget, or one that can be neither copied nor hashed (with a warning).
        """
        if value is NO_VALUE:
            kept, size = NO_VALUE, 64
        else:
            try:
                kept, size = self._snapshot(value, meta.get("size"), owned)
            except TooLarge:
                self.delete(key)
                return None
            except Exception as e:  # neither picklable nor hashable: it cannot be protected
                self.delete(key)
                warn(f"the memory tier does not keep the value of node "
                              f"{meta.get('node', '?')!r}: it can be neither copied nor "
                              f"hashed ({type(e).__name__}: {e})", CacheWarning)
                return None
            meta = {**meta, "size": size}  # reported (explain, run records) like other tiers
        with self._lock:
            sizes = self._sizes
            old = sizes.pop(key, None)
            if old is not None:
                self._bytes -= old
            sizes[key] = size
            self._values[key] = kept
            self._metas[key] = meta
            self._bytes += size
            while self._bytes > self.max_bytes and sizes:
                evicted, evicted_size = sizes.popitem(last=False)
                del self._values[evicted], self._metas[evicted]
                self._bytes -= evicted_size
        return meta

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            old = self._sizes.pop(key, None)
            if old is not None:
                del self._values[key], self._metas[key]
                self._bytes -= old

    def keys(self) -> Iterator[str]:
        """A snapshot of the keys held."""
        with self._lock:
            return iter(list(self._sizes))

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._sizes.clear()
            self._values.clear()
            self._metas.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes currently accounted for."""
        return self._bytes

    def _snapshot(self, value: Any, known: int | None, owned: bool) -> tuple[Any, int]:
        """The snapshot to keep and its size; :class:`TooLarge` past the budget.

        A size in the metadata (a slower tier's, on promotion) is trusted over a
        measure, and checked before anything is copied.
        """
        if known is not None and known > self.max_bytes:
            raise TooLarge(known)
        kept = snapshot(value, owned=owned, max_bytes=self.max_bytes)
        size = known or (kept.nbytes if isinstance(kept, Snapshot) else sizeof(kept))
        if size > self.max_bytes:
            raise TooLarge(size)
        return kept, size
