"""The memory tier: live Python objects in an LRU bounded by bytes.

Design note
-----------
Values are kept as the objects themselves (no serialisation), so a memory hit
costs a dict lookup. The budget is in bytes, estimated per value by
:func:`sizeof` (``sizes.py``: exact for arrays, frames and bytes wherever they
sit in the value; a bounded walk of containers and objects). When a put would
exceed the budget, least recently used entries are evicted; a value larger than
the whole budget is not kept at all. One lock guards the bookkeeping; it is
never held while sizing a value. Entries live in three parallel dicts (LRU order
with sizes, values, metadata) rather than one dict of tuples: a tuple per entry
is one more object for the cyclic garbage collector to walk, which cost a cold
10,000-node run more than the dicts do. Results are shared, not copied: treat
values returned by a flow as read-only, as with ``functools.lru_cache``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from lazyflow.cache.base import NO_VALUE, Meta
from lazyflow.cache.sizes import sizeof

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
        self._values: dict[str, Any] = {}
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
        """The value under ``key``; marks it most recently used."""
        with self._lock:
            value = self._values[key]
            self._sizes.move_to_end(key)
        return value

    def put(self, key: str, value: Any, meta: Meta) -> Meta | None:
        """Hold ``value``; evict least recently used entries to stay in budget.

        Returns the metadata held (with ``size``), or ``None`` for a value
        larger than the whole budget, which is not kept.
        """
        if value is NO_VALUE:
            size = 64
        else:  # sized once, and reported (explain, run records) like the other tiers do
            size = meta.get("size") or sizeof(value)
            meta = {**meta, "size": size}
        if size > self.max_bytes:
            self.delete(key)
            return None
        with self._lock:
            sizes = self._sizes
            old = sizes.pop(key, None)
            if old is not None:
                self._bytes -= old
            sizes[key] = size
            self._values[key] = value
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
