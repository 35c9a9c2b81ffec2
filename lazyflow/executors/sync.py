"""The synchronous executor: the reference path, calling each task inline."""

from __future__ import annotations

from concurrent.futures import Future

from lazyflow.executors.base import Outcome, Task

__all__ = ["SyncExecutor"]


class SyncExecutor:
    """Run each task in the calling thread, one at a time.

    Nodes with a ``timeout=`` cannot be interrupted inline: the engine runs
    those on a helper thread and abandons them on timeout (and says so).
    """

    name = "sync"
    max_workers = 1
    inline = True
    in_process = True

    def submit(self, task: Task) -> Future[Outcome]:
        """Run ``task`` now; return an already-resolved future."""
        future: Future[Outcome] = Future()
        future.set_result(task())
        return future

    def abandon(self, future: Future[Outcome]) -> bool:
        """Inline calls cannot be stopped."""
        return False

    def shutdown(self) -> None:
        """Nothing to release."""
