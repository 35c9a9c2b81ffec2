"""``async def`` nodes as an engine feature: awaited on the async lane, concurrently.

Under an in-process executor (``Capabilities.in_process``: sync, threads) an
async node's task goes to the lane (``executors/lane.py``) and does not take
one of the executor's workers: the loop counts lane tasks apart
(``RunState.lane``), so every ready async node starts at once and they wait
together. Under processes or Dask the worker runs the coroutine itself.
"""

from __future__ import annotations

import inspect
from concurrent.futures import Future
from typing import TYPE_CHECKING

from lazyflow.engine.hooks import Feature
from lazyflow.executors.base import Executor, Outcome
from lazyflow.executors.lane import LANE

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState
    from lazyflow.model.graph import Plan

__all__ = ["AWAITED", "async_nodes"]


class Awaited(Feature):
    """Hooks of an ``async def`` node under an in-process executor."""

    __slots__ = ()

    def executor(self, s: RunState, name: str, executor: Executor) -> Executor:
        """The async lane."""
        return LANE

    def submitted(self, s: RunState, name: str, future: Future[Outcome]) -> None:
        """Count it apart from the executor's workers."""
        s.lane.add(future)


AWAITED = Awaited()


def async_nodes(plan: Plan) -> frozenset[str]:
    """The nodes of ``plan`` whose function is ``async def`` (once per plan structure)."""
    found: frozenset[str] | None = plan.memo.get("async")
    if found is None:
        found = plan.memo["async"] = frozenset(
            n for n in plan.order if inspect.iscoroutinefunction(plan.nodes[n].func))
    return found
