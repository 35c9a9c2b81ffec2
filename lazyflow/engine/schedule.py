"""Who is ready: nodes added to a run while it runs, and consumers woken as nodes settle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from lazyflow.engine.checks import settle_hit
from lazyflow.engine.prepare import eager_edges, resolve
from lazyflow.engine.state import make_ready, touch, waiting
from lazyflow.model.policies import policy_for

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["need", "schedule", "settled"]


def need(s: RunState, roots: Sequence[str]) -> None:
    """Resolve ``roots`` and their undecided ancestors: settle hits, schedule misses."""
    decided = set(s.hits) | set(s.remaining)
    hits, needed, _ = resolve(s.plan, s.prepared, s.cache, roots, decided,
                              s.expired if s.fresh else None, s.cold)
    for new in (*hits, *needed):
        touch(s, new)
    for hit_name, hit in hits.items():
        settle_hit(s, hit_name, hit)
    schedule(s, needed)


def schedule(s: RunState, needed: Iterable[str]) -> None:
    """Make each needed node wait for its unsettled eager inputs (ready if none)."""
    eager_of = eager_edges(s.plan)
    for m in needed:
        eager = eager_of[m]
        s.remaining[m] = waiting(u for u in eager.values()
                                 if u not in s.digests and not s.run.nodes[u].done)
        for u in set(eager.values()):
            s.consumers[u] += 1
        if m not in s.policies:
            policy = s.policies[m] = policy_for(m, s.plan.nodes[m].options,
                                                s.options.overrides)
            if not s.caps.places_work:
                s.gate.add(m, policy.resources)
            if policy.priority:
                s.prioritized = True
        if not s.remaining[m]:
            make_ready(s, m)


def settled(s: RunState, name: str) -> None:
    """``name`` left the running set: free its resources and wake the consumers it was the
    last input of (unless it was sent back to wait for a lazy input it demanded)."""
    s.gate.release(name)  # a node sent back to wait is taken (and gated) again
    if not s.run.nodes[name].done:
        return
    downstream = s.plan.downstream[name]
    for d in downstream if len(downstream) < 2 else dict.fromkeys(downstream):
        waits_for = s.remaining.get(d)
        if waits_for and name in waits_for:
            if isinstance(waits_for, tuple):
                waits_for = s.remaining[d] = tuple(u for u in waits_for if u != name) \
                    if len(waits_for) > 1 else ()
            else:
                waits_for.discard(name)
            if not waits_for:
                make_ready(s, d)
