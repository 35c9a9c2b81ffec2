"""Catch nodes in a run: failures routed to the consumers that catch them (``failed.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lazyflow.model.failed import Failed

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["caught_by_all", "catches", "failed_digests", "record_failure", "taints"]


def catches(s: RunState, name: str, up: str) -> bool:
    """Whether ``name`` receives ``up``'s failure as an ``lf.Failed``."""
    return up in s.plan.nodes[name].options.catch and up in s.failures


def record_failure(s: RunState, name: str, error: BaseException,
                   because: str | None = None) -> None:
    """``name`` failed with ``error``, or (``because``) was skipped for that node's failure."""
    s.failures[name] = s.failures[because] if because is not None else Failed(name, error)


def caught_by_all(s: RunState, name: str) -> bool:
    """Whether ``name``'s failure is caught: it is no target, and every consumer of it in
    this request catches it."""
    consumers = [d for d in s.plan.downstream[name] if d in s.run.nodes]
    return bool(consumers) and name not in s.targets \
        and all(name in s.plan.nodes[d].options.catch for d in consumers)


def failed_digests(s: RunState, name: str, upstream: Mapping[str, str]) -> dict[str, str]:
    """``name``'s input digests, a unique one standing for each caught failure;
    :class:`KeyError` for an input with neither (it is being computed again)."""
    digests = s.digests
    return {p: digests[up] if up in digests or not catches(s, name, up)
            else s.failures[up].token for p, up in upstream.items()}


def taints(s: RunState, name: str, upstream: Mapping[str, str]) -> bool:
    """Whether ``name`` is computed from a caught failure or from a value that was (and so
    must not be stored); marks it so for its own consumers."""
    if any(up in s.tainted or catches(s, name, up) for up in upstream.values()):
        s.tainted.add(name)
        return True
    return False

