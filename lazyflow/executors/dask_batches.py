"""Batches of the Dask executor (``dask.py``): tasks sent together whose outcomes come back
as one result, and the futures the engine holds for them.

A :class:`Batch` is up to 64 tasks of one graph, followed on the cluster by their
collector (``dask_travel.together``), or a single task, which brings its own outcome.
Each task's future (:class:`Remote`) knows its batch and its place there, so a task
of a later graph that follows it takes its outcome from that batch's collector while
the collector is held, or by value once it was fetched. A batch resolves its futures
from the collector's result, or fails those not resolved yet; either way it lets go
of the collector, so the cluster keeps no result the engine has.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from lazyflow.executors.base import Outcome
from lazyflow.executors.dask_travel import unpacked

__all__ = ["Batch", "Remote", "resolve"]


class Remote(Future):  # type: ignore[type-arg]
    """A task's future, with the batch whose collector brings its outcome once sent."""

    batch: Batch | None = None
    index: int = 0  # its place among the batch's outcomes


class Batch:
    """Tasks sent together whose outcomes come back as one result: their collector's, or
    the task's own when it is alone (``single``). ``graph``: sent by ``flush``, so tasks
    of later graphs may follow its tasks."""

    __slots__ = ("graph", "members", "remote", "sent")

    def __init__(self, members: list[tuple[str, Remote]], graph: bool = True) -> None:
        self.members = members  # (Dask key, future), in the collector's order
        self.graph = graph
        self.remote: Any = None  # the collector's (or single task's) Dask future until fetched
        self.sent = time.monotonic()

    @property
    def single(self) -> bool:
        return len(self.members) == 1

    def outcomes(self, result: Any) -> tuple[Outcome, ...]:
        """Its tasks' outcomes, from its collector's (or single task's) result."""
        if not self.graph:  # a task sent on its own returns its outcome as it is
            return (result,)
        if self.single:
            return (unpacked(result),)
        return tuple(unpacked(packed) for packed in pickle.loads(result))

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Resolve each task with its outcome; then the cluster may forget them."""
        for (_, future), outcome in zip(self.members, outcomes, strict=True):
            resolve(future, outcome)
        self.remote = None  # after the results: the executor's ``_ref`` reads one or the other

    def fail(self, error: BaseException) -> None:
        """Fail the tasks not resolved yet with ``error``."""
        for _, future in self.members:
            resolve(future, error=error)
        self.remote = None

    def drop(self) -> None:
        """Release the collector: the scheduler forgets the tasks nothing else needs."""
        remote, self.remote = self.remote, None
        if remote is not None:
            remote.release()


def resolve(future: Future[Outcome], outcome: Outcome | None = None,
            error: BaseException | None = None) -> None:
    """Resolve ``future`` unless it is already (the sweep and a collector may race)."""
    try:
        if error is None:
            future.set_result(outcome)  # type: ignore[arg-type]
        else:
            future.set_exception(error)
    except InvalidStateError:
        pass
