"""Which features a node has in a run (``hooks.py`` says what a feature is)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lazyflow.engine.awaited import AWAITED, async_nodes
from lazyflow.engine.checks import CHECKED
from lazyflow.engine.graphs import GRAPHED, plain
from lazyflow.engine.hooks import Feature
from lazyflow.engine.lazyinputs import LAZY_INPUTS
from lazyflow.engine.maps import MAPPED
from lazyflow.engine.shared import SHARED
from lazyflow.engine.timeouts import TIMED

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState
    from lazyflow.model.policies import Policy

__all__ = ["bind"]

_GRAPH_STEP = (GRAPHED,)


def bind(s: RunState, name: str, policy: Policy) -> tuple[Feature, ...]:
    """The features of needed node ``name`` in this run, in hook order; ``()`` for most."""
    lazy_ps = s.lazy[name]
    options = s.plan.nodes[name].options
    mapped = options.map is not None
    # a graph step looks keys up and computes on a worker: not for what the engine must
    # see between steps (checks, caught failures, expiry)
    if s.caps.submits_graphs and plain(bool(lazy_ps), mapped, policy) \
            and not (options.check or options.catch or s.fresh):
        return _GRAPH_STEP  # its step on the worker takes the shared tier's part too
    awaited = s.caps.in_process and name in async_nodes(s.plan)
    if not (lazy_ps or mapped or s.sharing is not None or policy.timeout is not None
            or options.check or awaited):
        return ()
    features: list[Feature] = []
    if awaited:
        features.append(AWAITED)  # first: the executor hooks after it see the lane
    if lazy_ps:
        features.append(LAZY_INPUTS)
    if mapped:
        features.append(MAPPED)
    if s.sharing is not None and s.prepared[name].cacheable and not lazy_ps and not mapped \
            and not options.check:
        features.append(SHARED)  # lazy, mapped and checked nodes run here
    if policy.timeout is not None:
        features.append(TIMED)
    if options.check:
        features.append(CHECKED)  # after a map's gathering and a lazy node's unwrapping
    return tuple(features)
