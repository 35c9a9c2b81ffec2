"""The async lane: ``async def`` nodes of in-process runs are awaited on a private loop.

Design note
-----------
An ``async def`` node's call is a coroutine. Under the executors that run in
this process (sync, threads) every such call is submitted to one event loop
running on a daemon thread of its own, so independent async nodes of a
request wait concurrently — twenty nodes each awaiting 0.2 s take 0.2 s, not
4 — and they do not count against the executor's workers. A private loop,
because the thread asking may already run one that cannot be re-entered (a
Jupyter kernel's); a thread, so that loop runs while the engine waits.

A task is awaited through ``Task.acall``, the coroutine twin of calling it:
retries, backoff (``asyncio.sleep``), ``lf.report`` and hashing work as in a
call; a timeout or a cancellation cancels
the coroutine (``abandon``). Executors with workers elsewhere (processes,
Dask) run the coroutine to completion on the worker's own loop instead
(``run_to_completion``).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
from concurrent.futures import Future

from lazyflow.executors.base import Outcome, Task

__all__ = ["LANE", "AsyncLane"]


class AsyncLane:
    """Awaits tasks on the lane's event loop; as many at once as are submitted."""

    name = "async"
    max_workers = 1_000_000  # concurrency is the loop's; the engine counts lane tasks apart

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def submit(self, task: Task) -> Future[Outcome]:
        """Start awaiting ``task`` on the lane's loop."""
        return asyncio.run_coroutine_threadsafe(task.acall(), self._running_loop())

    def abandon(self, future: Future[Outcome]) -> bool:
        """Cancel the coroutine (a timeout, a cancelled run): it stops at its next await."""
        return future.cancel() or future.done()

    def shutdown(self) -> None:
        """Nothing to release: the loop serves every run of the process."""

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="lazyflow-async",
                                          daemon=True)
                thread.start()
                atexit.register(_close, loop, thread)
                self._loop = loop
            return self._loop

    def _forget(self) -> None:
        self._loop, self._lock = None, threading.Lock()  # a forked child has no loop thread


LANE = AsyncLane()
"""The process's async lane."""


def _close(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop and close the lane's loop when the interpreter exits."""
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not loop.is_running():
        loop.close()
