"""Test doubles shared by test modules (importable by name, unlike ``conftest``, which
``notebooks/`` has one of too)."""

from __future__ import annotations

from concurrent.futures import Future

import cloudpickle


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
