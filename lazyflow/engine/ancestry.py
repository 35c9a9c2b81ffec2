"""What a value cost, node by node: honest "time saved" and saved ``lf.report`` figures.

Design note
-----------
A hit saves the computation of its node and of every ancestor behind it — but
two hits of one request often share ancestors (a diamond's root, a common
``raw``), and an ancestor behind a hit may have run in this very request.
Summing a per-entry total per hit counted a shared ancestor once per path.

So each stored entry carries its **ancestry**: per node of the graph that
produced it (itself included) what that node's call cost, ``[seconds]`` or
``[seconds, {metric: value}]``. A request unites its hits' ancestries by node
name and leaves out the nodes it computed itself: every cost is counted once,
and no ancestor entry is read (the hit's own metadata holds it all).

The map grows with the ancestry, so it is kept only up to :data:`CAP` nodes;
beyond, the entry keeps only ``cost`` (seconds summed per path, an upper
bound), and a request counts such a hit by it. Notebook pipelines sit well
under the cap; a 10,000-node chain pays for 128 entries and then nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["CAP", "Ancestry", "computed"]

CAP = 128
"""The most nodes an entry's ancestry map holds."""

Ancestry = dict[str, list[Any]]
"""Node name -> ``[seconds]`` or ``[seconds, {metric: value}]``."""


def computed(s: RunState, name: str, seconds: float, metrics: Mapping[str, float] | None,
             upstream: Iterable[str]) -> Ancestry | None:
    """The ancestry of ``name``'s value just computed; ``None`` past the cap (or when an
    input's is unknown)."""
    own: list[Any] = [seconds, dict(metrics)] if metrics else [seconds]
    ancestry: Ancestry = {}
    for up in upstream:
        theirs = s.ancestry.get(up)
        if theirs is None or len(ancestry) + len(theirs) > CAP:
            return None
        ancestry.update(theirs)
    ancestry[name] = own
    return ancestry if len(ancestry) <= CAP else None
