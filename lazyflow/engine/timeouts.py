"""``timeout=`` as an engine feature: a clock per running node, and what happens at its end.

A node's clock starts when it is first seen running (a queued task is not
timed yet). At the deadline the node is *abandoned*: stopped where the
executor can (a worker process), otherwise left running with a warning, and
settled as failed with :class:`~lazyflow.errors.NodeTimeout`. An inline
executor cannot be interrupted, so its timed nodes run on a helper thread.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from lazyflow.engine.hooks import Feature
from lazyflow.engine.schedule import settled
from lazyflow.engine.settle import settle
from lazyflow.errors import LazyflowWarning, NodeTimeout, warn
from lazyflow.executors import Executor, Outcome, ThreadExecutor
from lazyflow.executors.lane import LANE

if TYPE_CHECKING:
    from lazyflow.engine.state import RunState

__all__ = ["TIMED", "expire_deadlines", "next_deadline"]

_START_POLL = 0.05  # seconds between checks whether a timed task has started running


class Timed(Feature):
    """Hooks of a node with a ``timeout=``."""

    __slots__ = ()

    def executor(self, s: RunState, name: str, executor: Executor) -> Executor:
        """A helper thread instead of an inline executor, which cannot be interrupted."""
        if not s.caps.inline or executor is not s.executor:  # another feature chose it
            return executor
        if s.timed is None:
            s.timed = ThreadExecutor(max_workers=1)
        return s.timed

    def submitted(self, s: RunState, name: str, future: Future[Outcome]) -> None:
        """Start the node's clock (or, while it is queued, poll for its start)."""
        timeout = s.policies[name].timeout
        assert timeout is not None
        s.deadlines[future] = time.monotonic() + timeout
        # queued, or its worker still starting: not timed yet (a coroutine on the async
        # lane starts at once, though its future never says "running")
        if not future.running() and future not in s.lane:
            s.unstarted.add(future)
            s.deadlines[future] = time.monotonic() + min(timeout, _START_POLL)


TIMED = Timed()


def executor_of(s: RunState, future: Future[Outcome]) -> Executor:
    """The executor running ``future``: the async lane, the timed helper thread, or the run's."""
    if future in s.lane:
        s.lane.discard(future)
        return LANE
    return s.timed if s.timed is not None and s.caps.inline else s.executor


def next_deadline(s: RunState) -> float | None:
    """Seconds until the nearest deadline, or ``None`` when no node is timed."""
    if not s.deadlines:
        return None
    return max(0.0, min(s.deadlines.values()) - time.monotonic())


def expire_deadlines(s: RunState) -> None:
    """Settle every running node past its deadline as timed out."""
    now = time.monotonic()
    for future, deadline in list(s.deadlines.items()):
        if deadline > now or future.done():
            continue
        timeout = s.policies[s.running[future]].timeout
        assert timeout is not None
        if future in s.unstarted:  # its clock starts when it is first seen running
            if future.running():
                s.unstarted.discard(future)
            s.deadlines[future] = now + (timeout if future.running()
                                         else min(timeout, _START_POLL))
            continue
        name = s.running.pop(future)
        del s.deadlines[future]
        executor = executor_of(s, future)
        stopped = executor.abandon(future)
        detail = "" if stopped else \
            f" (its {executor.name} worker cannot be stopped and may still be running)"
        started = s.run.nodes[name].started or time.time()
        settle(s, name, Outcome(error=NodeTimeout(name, timeout, detail), attempts=1,
                                started=started, ended=time.time(), duration=timeout))
        settled(s, name)
        if not stopped:
            warn(f"node {name!r} timed out{detail}", LazyflowWarning)
