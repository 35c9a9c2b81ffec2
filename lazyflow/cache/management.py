"""Managing a cache hierarchy as a whole: ``Cache.clear``, ``stats`` and ``prune``.

Built on the ``Tier`` primitives alone (``keys``, ``meta``, ``delete``, ``clear``),
so every tier, present or future, supports them; a tier that can do better says
so by a method of its own (the remote's ``usage`` answers ``stats`` from its
ledger, its ``collect`` prunes by last use, ``remote_gc.py``). Deleting from a
shared tier needs ``confirm=True``, checked for every chosen tier before any is
touched: a refused clear deletes nothing, on any tier.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lazyflow.cache.base import Tier
from lazyflow.cache.sizes import parse_size
from lazyflow.errors import ConfirmationError

__all__ = ["SHARED", "clear", "prune", "stats"]

SHARED = frozenset({"remote"})
"""Names of the tiers other people share: never written by local records, deleted from
only when confirmed."""


def clear(tiers: Sequence[Tier], chosen: Sequence[Tier], confirm: bool, action: str) -> None:
    """Empty ``chosen`` (of ``tiers``), when ``action`` may delete from each of them."""
    _confirmed(tiers, chosen, confirm, action)
    for tier in chosen:
        tier.clear()


def stats(tiers: Sequence[Tier], hits: Mapping[str, int], misses: Mapping[str, int],
          unserved: int) -> dict[str, dict[str, Any]]:
    """Per tier: entries, bytes, the values it served (``hits``) and the loads it could
    not serve (``misses``); ``total`` adds the requests no tier could serve."""
    report = {tier.name: _holdings(tier, hits[tier.name], misses[tier.name]) for tier in tiers}
    report["total"] = {"hits": sum(hits.values()), "misses": unserved}
    return report


def prune(tiers: Sequence[Tier], chosen: Sequence[Tier], max_size: int | str | None,
          older_than: float | str | _dt.timedelta | None, confirm: bool, action: str, *,
          flush: Callable[[], None]) -> dict[str, dict[str, int]]:
    """Shrink ``chosen``: entries stored (on a remote: last used) before ``older_than``,
    then the oldest until the rest fits in ``max_size``; what went, per tier.
    ``flush`` lands buffered writes before each tier is looked at."""
    if max_size is None and older_than is None:
        raise ValueError("prune needs max_size= (e.g. '10GB') or older_than= (e.g. '30d')")
    limit = None if max_size is None else parse_size(max_size, what="max_size")
    cutoff = None if older_than is None else time.time() - _seconds(older_than)
    _confirmed(tiers, chosen, confirm, action)
    report: dict[str, dict[str, int]] = {}
    for tier in chosen:
        flush()
        report[tier.name] = _prune_tier(tier, limit, cutoff)
    return report


def _confirmed(tiers: Sequence[Tier], chosen: Sequence[Tier], confirm: bool,
               action: str) -> None:
    """Refuse (before anything is deleted) to delete from a shared tier unconfirmed,
    suggesting the slowest local tier of ``tiers`` (the disk) to delete from instead."""
    if confirm:
        return
    shared = [_where(t) for t in chosen if t.name in SHARED]
    if shared:
        local = [t.name for t in tiers if t.name not in SHARED]
        raise ConfirmationError(action, shared, local_tier=local[-1] if local else None)


def _where(tier: Tier) -> str:
    """A shared tier's address, as its user configured it."""
    url = getattr(tier, "url", None)
    return str(url) if url else repr(tier)


def _holdings(tier: Tier, hits: int, misses: int) -> dict[str, Any]:
    """One tier's line of ``stats``: entries, hits, misses, then bytes (and per-flow figures
    where the tier keeps them)."""
    usage = getattr(tier, "usage", None)
    if callable(usage):  # the remote: from its ledger, never a listing of every entry
        held: dict[str, Any] = dict(usage())
        return {"entries": held.pop("entries", 0), "hits": hits, "misses": misses, **held}
    facts: dict[str, Any] = {"entries": len(list(tier.keys())), "hits": hits, "misses": misses}
    nbytes = getattr(tier, "nbytes", None)
    if isinstance(nbytes, int):
        facts["bytes"] = nbytes
    return facts


def _prune_tier(tier: Tier, limit: int | None, cutoff: float | None) -> dict[str, int]:
    collect = getattr(tier, "collect", None)
    if callable(collect):  # the remote: garbage collection by last use (remote_gc.py)
        done: dict[str, int] = collect(limit, cutoff)
        return done
    entries = []
    stored_keys = list(tier.keys())
    for key in stored_keys:
        meta = tier.meta(key)
        if meta is not None:
            entries.append((float(meta.get("stored") or meta.get("created") or 0.0),
                            int(meta.get("size") or 0), key))
    entries.sort()
    removed = freed = 0
    total = sum(size for _, size, _ in entries)
    for stored, size, key in entries:
        if (cutoff is None or stored >= cutoff) and (limit is None or total <= limit):
            continue
        tier.delete(key)
        removed += 1
        freed += size
        total -= size
    return {"removed": removed, "freed": freed, "bytes": total}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _seconds(age: float | str | _dt.timedelta) -> float:
    if isinstance(age, _dt.timedelta):
        return age.total_seconds()
    if isinstance(age, (int, float)) and not isinstance(age, bool):
        return float(age)
    match = _DURATION.match(str(age))
    if match is None:
        raise ValueError(f"older_than={age!r} is not an age: use seconds, a timedelta or a "
                         "number with s, m, h, d or w (e.g. '30d')")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
