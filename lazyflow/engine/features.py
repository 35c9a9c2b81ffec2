"""Which features a node has in a run (``hooks.py`` says what a feature is)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    mapped = s.plan.nodes[name].options.map is not None
    if s.caps.submits_graphs and plain(bool(lazy_ps), mapped, policy):
        return _GRAPH_STEP  # its step on the worker takes the shared tier's part too
    if not (lazy_ps or mapped or s.sharing is not None or policy.timeout is not None):
        return ()
    features: list[Feature] = []
    if lazy_ps:
        features.append(LAZY_INPUTS)
    if mapped:
        features.append(MAPPED)
    if s.sharing is not None and s.prepared[name].cacheable and not lazy_ps and not mapped:
        features.append(SHARED)  # lazy and mapped nodes run here
    if policy.timeout is not None:
        features.append(TIMED)
    return tuple(features)
