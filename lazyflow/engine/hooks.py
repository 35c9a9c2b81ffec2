"""Features a node has, bound to it when the run schedules it; the points they hook in.

Design note
-----------
The loop and the per-node step know the usual node only. What some nodes
have besides — lazy inputs, ``map=``, a shared tier to run on, a ``timeout=``
— is a :class:`Feature` with a method per *hook point*. ``features.bind`` gives each
needed node the tuple of its features once, when it is scheduled; the usual
node gets ``()`` and the engine makes no hook call for it (``if features:``),
so a feature costs only the nodes that have it.

The points, in the order of a node's step:

- ``lookup``: the content key to look up, ``None`` for no lookup, or
  ``WAIT`` when the node must first wait (lazy inputs replay their traces
  here; expiry at lookup, ``max_age=``, belongs here too);
- ``arguments``: supply some keyword arguments; return the parameters it
  supplied (lazy inputs hand thunks; a shared tier names inputs by key);
- ``executor``: where the node runs (a timed node of an inline executor
  runs on a helper thread);
- ``task``: transform the task (a lazy call is wrapped to trace; a shared
  node becomes a :class:`~lazyflow.engine.step.WorkerStep`);
- ``submit``: submit it in its own way, or ``None`` to let the engine do it
  (a map submits the elements its manifest lacks, in a few batches);
- ``submitted``: the future is in flight (timeouts start a clock);
- ``outcome``: rewrite the outcome before it is settled, or ``None`` when
  the feature settled it itself (a lazy node sent back to wait; a map
  gathers its elements). Checks before store, metrics and profiles, and
  routing a failure to a catching node hook in here.

Run-wide concerns are not per-node hooks: a priority queue replaces the
``ready`` deque, async completion is a future like any other, and batched
store and lookup are the cache's (``Cache.commit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Final

from lazyflow.executors.base import Executor, Outcome, Task

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["WAIT", "Feature"]

WAIT: Final = "wait"
"""``Feature.lookup``: the node must wait for an input before it can be looked up."""


class Feature:
    """One capability of a node; each method is a hook point, a no-op unless overridden."""

    __slots__ = ()

    def lookup(self, s: RunState, name: str, key: str | None) -> str | None:
        """The content key to look ``name`` up under (``None``: none), or ``WAIT``."""
        return key

    def arguments(self, s: RunState, name: str, upstream: Mapping[str, str],
                  kwargs: dict[str, Any]) -> frozenset[str]:
        """Supply some of ``name``'s arguments into ``kwargs``; return their parameters."""
        return frozenset()

    def executor(self, s: RunState, name: str, executor: Executor) -> Executor:
        """The executor ``name`` runs on."""
        return executor

    def task(self, s: RunState, name: str, task: Task) -> Task:
        """The task to run for ``name``."""
        return task

    def submit(self, s: RunState, name: str, task: Task,
               executor: Executor) -> Future[Outcome] | None:
        """Submit ``name`` in this feature's own way, or ``None`` to leave it to the engine."""
        return None

    def submitted(self, s: RunState, name: str, future: Future[Outcome]) -> None:
        """``name`` is in flight as ``future``."""

    def outcome(self, s: RunState, name: str, outcome: Outcome) -> Outcome | None:
        """``name``'s outcome as the engine should settle it; ``None`` when settled here."""
        return outcome
