"""The thread executor: nodes run on a pool of threads in this process.

Good for nodes that release the GIL (numpy, I/O, most compiled libraries).
A thread cannot be killed: a node past its timeout is *abandoned* — the run
moves on and a warning says the thread may still be busy.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor

from lazyflow.executors.base import Outcome, Task

__all__ = ["ThreadExecutor"]


class ThreadExecutor:
    """Run tasks on ``max_workers`` threads (default: the number of CPUs)."""

    name = "threads"
    in_process = True

    def __init__(self, max_workers: int | None = None) -> None:
        self.max_workers = max_workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="lazyflow")

    def submit(self, task: Task) -> Future[Outcome]:
        """Queue ``task`` on the pool."""
        return self._pool.submit(task)

    def abandon(self, future: Future[Outcome]) -> bool:
        """Cancel the task if it has not started; a running thread cannot be stopped."""
        return future.cancel()

    def shutdown(self) -> None:
        """Let running threads finish in the background; accept no new work."""
        self._pool.shutdown(wait=False, cancel_futures=True)
