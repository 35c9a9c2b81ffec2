"""Hits whose entry vanished before their value was read: computed again in the same run.

A hit's value is read only when a consumer starts (or, for a target, when the
loop is done), and its entry may have vanished by then (evicted, deleted,
damaged): ``demote`` turns it back into a miss of the same run, with its own
parameters, its ancestors resolved like a lazy input's (``schedule.need``),
and its dependents keyed by whatever digest it now computes to. Rejected:
computing it in a nested run, which cannot know the node's own parameters
(only the union of the request's), reports a second run, and leaves the
consumer keyed by the old digest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lazyflow.cache.snapshot import handout, shareable
from lazyflow.engine.prepare import eager_edges
from lazyflow.engine.schedule import need, schedule
from lazyflow.engine.step import load
from lazyflow.errors import CacheWarning, warn

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["VANISHED", "Vanished", "demote", "value_of"]

VANISHED = "entry vanished from the cache (evicted or damaged); recomputed"
"""The reason of a node whose hit was demoted to a miss (``demote``)."""


class Vanished(Exception):
    """A settled node's entry could not be loaded any more (evicted, damaged, deleted)."""

    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


def value_of(s: RunState, name: str, *, last: bool = False) -> Any:
    """A settled node's value; :class:`Vanished` when its entry cannot be read any more.

    ``last``: no reader in this run comes after this one (a cached target collected
    once every node has settled), so nothing is kept for later readers — keeping meant
    a copy of the whole value (24 ms of a 100 MB array), made for nobody.
    """
    if name in s.values:
        return handout(s.values[name])
    try:
        value = load(s.cache, s.keys[name], s.digests.get(name))
    except KeyError:
        raise Vanished(name) from None
    if not last and (s.consumers[name] > 1 or name in s.targets):
        s.values[name] = shareable(value)  # later readers get copies of it
    return value  # a fresh copy from the cache: this reader's own


def demote(s: RunState, name: str) -> None:
    """``name`` was settled, but its entry vanished before its value was read: it becomes
    a miss of this very run.

    Its ancestors are resolved (they may be hits) and it is computed with its own
    parameters. It no longer has a digest until then, so a dependent that starts waits
    for it and is keyed by the new digest; a dependent already running keeps the
    digest and key it was started with.
    """
    warn(f"the cache entry of node {name!r} vanished before it could be read "
                  "(evicted or damaged), or another writer replaced it with another value; "
                  "computing it again in this run", CacheWarning)
    digest, key = s.digests.pop(name), s.keys.pop(name)
    s.vanished[name] = digest
    for running in s.running.values():
        if name in s.plan.upstream[running].values():
            s.kept.setdefault(running, {})[name] = (digest, key)
    s.hits.pop(name, None)
    s.costs.pop(name, None)
    if s.lazy[name]:  # it demands its lazy inputs afresh when it runs again
        s.demanded[name].clear()
        s.used.pop(name, None)
    record = s.run.nodes[name]
    record.status, record.reason, record.tier, record.key = "pending", VANISHED, None, None
    record.digest, record.size, record.saved = None, None, 0.0
    need(s, list(eager_edges(s.plan)[name].values()))
    schedule(s, [name])
