"""Shared fixtures: flows with isolated caches, and a call counter that keys ignore."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future

import cloudpickle
import pytest

import lazyflow as lf


class Calls(Counter):
    """Counts node executions; hashes to a constant so reading it never invalidates a node."""


lf.register_hasher(Calls, lambda calls: "calls")


@pytest.fixture
def calls() -> Calls:
    """A fresh execution counter: ``calls["node"]`` is how often it ran."""
    return Calls()


@pytest.fixture
def flow() -> lf.Flow:
    """A flow whose cache lives in memory only (no disk, no remote)."""
    return lf.Flow("test", cache=lf.Cache(disk=None))


class PicklingExecutor:
    """Runs each task on a pickled copy: the boundary a process executor puts around a task."""

    name = "pickling"
    max_workers = 1

    def submit(self, task):
        future = Future()
        future.set_result(cloudpickle.loads(cloudpickle.dumps(task))())
        return future

    def abandon(self, future):
        return False

    def shutdown(self):
        pass


@pytest.fixture
def pickling_executor() -> PicklingExecutor:
    """An executor that pickles every task before calling it (process semantics, inline)."""
    return PicklingExecutor()
