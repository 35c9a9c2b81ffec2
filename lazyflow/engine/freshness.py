"""``max_age=``: a stored value older than its node's ``max_age`` is a miss.

Design note
-----------
Age counts from ``created``, when the value was computed: every tier keeps it
through promotion, so a value copied from a colleague's remote entry into
memory is as old as it was there. A node's own entry is checked at every
lookup (``expired``): resolving a target by its trace record, and looking a
node up by content key before computing it.

Laziness hides ancestors: a cached ``report`` is served without looking at
``prices``, so a stale ``prices`` would hide behind it. Each trace record
therefore carries ``expires``, the earliest time a ``max_age`` in the
value's ancestry (itself included) makes it stale. A trace hit past it is
not a hit: the node is resolved like a miss, its ancestors are looked up in
turn, the expired ones are computed again, and early cutoff keeps every
dependent whose inputs come out equal cached (its content key is
unchanged; its trace record is rewritten with the new ``expires``).

Clocks. Ages compare this machine's clock with the writer's. An entry
stamped more than :data:`SKEW` seconds in the future (a writer whose clock
runs fast) is treated as expired rather than trusted to stay fresh longer
than ``max_age`` allows; within that tolerance, ages are taken as written.
Keep machines that share a remote cache on NTP.

A plan none of whose nodes has ``max_age`` does none of this (``fresh`` on
the run state is false).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from lazyflow.cache.base import Meta

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState
    from lazyflow.model.graph import Plan

__all__ = ["SKEW", "ancestry_expiry", "expired", "has_max_age"]

SKEW = 300.0
"""Seconds an entry's ``created`` may lie in the future before it counts as expired."""


def has_max_age(plan: Plan) -> bool:
    """Whether any node of ``plan`` declares ``max_age`` (once per plan structure)."""
    found: bool | None = plan.memo.get("max_age")
    if found is None:
        found = plan.memo["max_age"] = any(
            plan.nodes[n].options.max_age is not None for n in plan.order)
    return found


def expired(meta: Meta, max_age: float | None, expires: float | None = None,
            now: float | None = None) -> str | None:
    """Why the entry of ``meta`` is stale (``"expired (age 3h > max_age 1h)"``), or
    ``None`` when it is fresh; ``expires`` is its trace record's ancestry expiry."""
    now = time.time() if now is None else now
    if max_age is not None:
        created = meta.get("created")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            return "expired (when it was computed is unknown)"
        if created > now + SKEW:
            return (f"expired (computed {_span(created - now)} in the future by this "
                    "machine's clock; see clock skew in docs/checks-and-freshness.md)")
        age = now - created
        if age > max_age:
            shown_age, shown_max = _apart(age, max_age)
            return f"expired (age {shown_age} > max_age {shown_max})"
    if expires is not None and expires <= now:
        return f"expired (an input's max_age ran out {_span(now - expires)} ago)"
    return None


def ancestry_expiry(s: RunState, name: str, created: float,
                    upstream: Iterable[str]) -> float | None:
    """The earliest expiry in the ancestry of ``name``'s value computed at ``created``."""
    max_age = s.plan.nodes[name].options.max_age
    found = created + max_age if max_age is not None else None
    for up in upstream:
        theirs = s.expires.get(up)
        if theirs is not None and (found is None or theirs < found):
            found = theirs
    return found


def _apart(larger: float, smaller: float) -> tuple[str, str]:
    """Two durations spelled precisely enough that they read as different."""
    for digits in (0, 1, 2, 3):
        shown = _span(larger, digits), _span(smaller, digits)
        if shown[0] != shown[1]:
            return shown
    return shown


def _span(seconds: float, digits: int = 0) -> str:
    """``"45s"``, ``"12m"``, ``"3h"``, ``"2.5d"``: a duration as a reader says it, with at
    least ``digits`` decimals."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            amount = seconds / size
            if not digits and (amount >= 10 or amount == int(amount)):
                return f"{amount:.0f}{unit}"
            return f"{amount:.{max(digits, 1)}f}{unit}"
    return f"{seconds:.{digits}f}s"
