"""Single-flight claims of one run (``flights.py`` holds them process-wide)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazyflow.cache.flights import FLIGHTS, called_here

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["WAITING", "land", "land_all", "lead"]

WAITING = "waiting for another request computing the same value"
"""The reason of a node parked until another request's computation of its key lands."""


def lead(s: RunState, name: str, key: str) -> bool:
    """Claim ``key`` for ``name``; False when another computation of it is in flight:
    ``name`` is parked until it lands, then looked up again.

    The claim's owner is the node's record: one per node and run, so a second node of
    this run with the same key waits for the first like any other request.
    """
    record = s.run.nodes[name]
    if FLIGHTS.lead(key, record):  # the usual case: no one computes it (and no callback)
        s.flying[name] = key
        return True
    if not s.waits or called_here(key):  # on an event loop's thread, or asked for
        return True  # by the very node computing it: compute it too, never wait
    if FLIGHTS.claim(key, record, lambda: s.finished.put(name)):  # landed meanwhile
        s.flying[name] = key
        return True
    s.parked.add(name)
    record.reason = WAITING
    return False


def land(s: RunState, name: str) -> None:
    """``name`` is done computing its key, with a stored value or not: wake its waiters."""
    key = s.flying.pop(name, None)
    if key is not None:
        FLIGHTS.land(key, s.run.nodes[name])


def land_all(s: RunState) -> None:
    """Release every key this run still claims."""
    for name in list(s.flying):
        land(s, name)
