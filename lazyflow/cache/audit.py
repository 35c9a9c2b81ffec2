"""The cache audit (``lazyflow cache verify``): every stored entry's bytes against the
checksum stored with it, tier by tier, without unpickling or re-hashing anything."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lazyflow.cache.base import NO_VALUE
from lazyflow.cache.serialize import CorruptEntryError

if TYPE_CHECKING:
    from lazyflow.cache.hierarchy import Cache

__all__ = ["verify_cache"]


def verify_cache(cache: Cache, *, tier: str | None = None,
                 drop: bool = False) -> dict[str, dict[str, Any]]:
    """Check every stored entry's bytes against the checksum stored with it.

    Nothing is unpickled or re-hashed: an entry whose value is an instance of
    a class this process cannot import, or whose digest this process would
    compute differently, is intact when its bytes are. An entry is *damaged*
    when its bytes no longer match their checksum, its value file or object is
    missing, or its metadata is unreadable; damaged entries are deleted only
    with ``drop=True``. An entry that cannot be read at all (permissions, a
    network error) is reported as *unreadable* and never deleted.

    Returns, per tier: ``checked`` (entries holding a value), ``intact``,
    ``damaged`` and ``unreadable`` (one ``{"key", "node", "problem"}`` each),
    ``dropped`` (keys deleted) and ``skipped`` (entries of a tier that holds
    live objects rather than bytes, such as memory: nothing to check).

    >>> verify_cache(flow.cache)["disk"]["damaged"]         # doctest: +SKIP
    [{'key': '3f2a…', 'node': 'raw', 'problem': 'entry checksum … does not match …'}]
    """
    return {t.name: _verify_tier(t, drop=drop)
            for t in (cache.tiers if tier is None else [cache.tier(tier)])}


def _verify_tier(tier: Any, *, drop: bool) -> dict[str, Any]:
    report: dict[str, Any] = {"checked": 0, "intact": 0, "damaged": [], "unreadable": [],
                              "dropped": [], "skipped": 0}
    check = getattr(tier, "check", None)
    if check is None:  # live objects (memory): no stored bytes to compare
        report["skipped"] = sum(1 for key in list(tier.keys()) if _holds_value(tier, key))
        return report
    for key in list(tier.keys()):
        try:
            meta = check(key)
        except CorruptEntryError as e:
            report["checked"] += 1
            report["damaged"].append(_finding(key, str(e), e.node))
            if drop:
                tier.delete(key)
                report["dropped"].append(key)
            continue
        except Exception as e:  # unreachable, not damaged: a colleague's entry is kept
            report["checked"] += 1
            report["unreadable"].append(_finding(key, f"{type(e).__name__}: {e}"))
            continue
        if meta is not None:
            report["checked"] += 1
            report["intact"] += 1
    return report


def _holds_value(tier: Any, key: str) -> bool:
    """Whether the entry is a value, not a record (metadata only)."""
    try:
        return tier.get(key) is not NO_VALUE
    except KeyError:  # evicted meanwhile
        return False


def _finding(key: str, problem: str, node: str | None = None) -> dict[str, Any]:
    """One reported entry: its key, its node (when its metadata still says), the problem."""
    return {"key": key, "node": node, "problem": problem}
