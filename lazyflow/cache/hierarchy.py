"""The cache hierarchy: ``lf.Cache``, built only on the ``Tier`` primitives.

Design note
-----------
Tiers are ordered fastest first (memory, disk, remote). Reads walk down and
stop at the first tier that holds the key; a hit below the top is *promoted*
(copied into every faster tier) so the next read is fast. Writes go to every
tier. ``lookup`` answers from metadata alone, so deciding a hit never loads
or unpickles a value; ``load`` then fetches the value and, on tiers that
serialise, re-hashes it against the stored digest (a corrupted or truncated
entry is dropped with a warning and reported as a miss: never return wrong
data).

Besides value entries the hierarchy keeps *records*: metadata-only entries
(the trace index of ``keys.py``: request key -> content key and digest).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from lazyflow.cache.base import NO_VALUE, Meta, Tier
from lazyflow.cache.memory import MemoryTier
from lazyflow.cache.sizes import parse_size
from lazyflow.errors import CacheWarning

__all__ = ["Cache", "default_memory_budget"]


def default_memory_budget() -> int:
    """A quarter of physical RAM (1 GiB when that cannot be read)."""
    try:
        import os

        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    except (ValueError, OSError, AttributeError):
        return 2**30


class Cache:
    """Where results live: memory, then local disk, then a remote URL.

    >>> cache = Cache(memory="500MB", disk=None)
    >>> [tier.name for tier in cache.tiers]
    ['memory']

    ``memory`` is a byte budget ("2GB", bytes, or ``None`` for no memory tier);
    ``disk`` a directory (``None`` for none); ``remote`` an fsspec URL such as
    ``s3://bucket/prefix`` with ``remote_options`` passed to the filesystem.
    """

    def __init__(
        self,
        memory: int | str | None = "default",
        disk: str | None = None,
        remote: str | None = None,
        remote_options: dict[str, Any] | None = None,
        *,
        tiers: Sequence[Tier] | None = None,
    ) -> None:
        if tiers is None:
            built: list[Tier] = []
            if memory is not None:
                budget = (default_memory_budget() if memory == "default"
                          else parse_size(memory, what="memory"))
                built.append(MemoryTier(budget))
            built.extend(_build_lower_tiers(disk, remote, remote_options or {}))
            tiers = built
        self.tiers: list[Tier] = list(tiers)
        self._lock = threading.Lock()
        self._hits: Counter[str] = Counter()
        self._misses = 0

    # ----------------------------------------------------------------- values

    def lookup(self, key: str) -> tuple[Meta, str] | None:
        """Metadata and tier name of the first tier holding ``key``; never loads the value."""
        for tier in self.tiers:
            meta = tier.meta(key)
            if meta is not None:
                return meta, tier.name
        return None

    def load(self, key: str) -> tuple[Any, str]:
        """The value under ``key`` and the tier it came from; promotes lower-tier hits.

        Raises ``KeyError`` when no tier holds a readable entry.
        """
        for index, tier in enumerate(self.tiers):
            meta = tier.meta(key)
            if meta is None:
                continue
            try:
                value = tier.get(key)
            except KeyError:
                continue
            except Exception as e:  # a tier that cannot decode its entry drops it
                self._drop_corrupt(tier, key, e)
                continue
            with self._lock:
                self._hits[tier.name] += 1
            for upper in self.tiers[:index]:
                self._put_quietly(upper, key, value, meta)
            return value, tier.name
        with self._lock:
            self._misses += 1
        raise KeyError(key)

    def store(self, key: str, value: Any, meta: Meta) -> None:
        """Write ``value`` to every tier; a failing lower tier warns, never fails the run."""
        for tier in self.tiers:
            self._put_quietly(tier, key, value, meta)

    # ----------------------------------------------------------------- records

    def record(self, key: str, meta: Meta) -> None:
        """Store a metadata-only record under ``key`` in every tier."""
        self.store(key, NO_VALUE, meta)

    def find_record(self, key: str) -> Meta | None:
        """The record under ``key`` from the fastest tier holding it (promoted upwards)."""
        for index, tier in enumerate(self.tiers):
            meta = tier.meta(key)
            if meta is not None:
                for upper in self.tiers[:index]:
                    self._put_quietly(upper, key, NO_VALUE, meta)
                return meta
        return None

    # ----------------------------------------------------------------- management

    def delete(self, key: str) -> None:
        """Remove ``key`` from every tier."""
        for tier in self.tiers:
            tier.delete(key)

    def clear(self, tier: str | None = None) -> None:
        """Remove every entry, from one tier (by name) or from all."""
        for t in self._select(tier):
            t.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        """Entries and hits per tier, plus misses (requests no tier could serve)."""
        report: dict[str, dict[str, int]] = {}
        for tier in self.tiers:
            report[tier.name] = {"entries": sum(1 for _ in tier),
                                 "hits": self._hits[tier.name]}
            nbytes = getattr(tier, "nbytes", None)
            if isinstance(nbytes, int):
                report[tier.name]["bytes"] = nbytes
        report["total"] = {"hits": sum(self._hits.values()), "misses": self._misses}
        return report

    def flush(self) -> None:
        """Wait for background writes of every tier that has them."""
        for tier in self.tiers:
            flush = getattr(tier, "flush", None)
            if callable(flush):
                flush()

    def tier(self, name: str) -> Tier:
        """The tier called ``name``; ``KeyError`` naming the configured ones otherwise."""
        for t in self.tiers:
            if t.name == name:
                return t
        raise KeyError(f"no {name!r} tier in this cache; configured: "
                       f"{', '.join(t.name for t in self.tiers) or 'none'}")

    def __repr__(self) -> str:
        return f"Cache({', '.join(repr(t) for t in self.tiers)})"

    # ----------------------------------------------------------------- internals

    def _select(self, name: str | None) -> list[Tier]:
        return list(self.tiers) if name is None else [self.tier(name)]

    def _put_quietly(self, tier: Tier, key: str, value: Any, meta: Meta) -> None:
        if tier.name == "memory":
            tier.put(key, value, meta)
            return
        try:
            tier.put(key, value, meta)
        except Exception as e:
            warnings.warn(f"could not write cache entry {key[:12]}… to the {tier.name} tier "
                          f"({type(e).__name__}: {e}); the run goes on", CacheWarning,
                          stacklevel=3)

    def _drop_corrupt(self, tier: Tier, key: str, error: BaseException) -> None:
        warnings.warn(f"dropped unreadable {tier.name} cache entry {key[:12]}… "
                      f"({type(error).__name__}: {error}); it will be recomputed",
                      CacheWarning, stacklevel=4)
        # a tier that cannot delete must still not serve the entry: the caller moves on
        with contextlib.suppress(Exception):
            tier.delete(key)


def _build_lower_tiers(disk: str | None, remote: str | None,
                       remote_options: dict[str, Any]) -> list[Tier]:
    if disk is None and remote is None:
        return []
    raise NotImplementedError("disk and remote tiers arrive with the cache-hierarchy issue")
