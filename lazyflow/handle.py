"""``flow.submit``: a run in a background thread, with a handle to watch or cancel it."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from lazyflow.engine.cancel import CancelToken
from lazyflow.engine.events import Event, RunStarted

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import Run

__all__ = ["RunHandle"]


class RunHandle:
    """A run going on in a background thread.

    ``run`` is the live :class:`~lazyflow.run.Run` (``None`` until it starts);
    ``cancel()`` stops it at the next node boundary; ``result()`` waits and
    returns the finished run, or raises what the run raised.
    """

    def __init__(self, flow: Flow, targets: str | Iterable[str], options: dict[str, Any]) -> None:
        self.token: CancelToken = options.pop("cancel", None) or CancelToken()
        self.run: Run | None = None
        self._future: Future[Run] = Future()
        self._started = threading.Event()
        observers = (*options.pop("observers", ()), self._observe)
        target_list = targets if isinstance(targets, str) else list(targets)

        def work() -> None:
            try:
                self._future.set_result(flow.run(target_list, cancel=self.token,
                                                 observers=observers, **options))
            except BaseException as e:
                self._future.set_exception(e)
            finally:
                self._started.set()

        self._thread = threading.Thread(target=work, name=f"lazyflow-{flow.name}", daemon=True)
        self._thread.start()

    def _observe(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run = event.run
            self._started.set()

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Ask the run to stop at the next node boundary; finished nodes stay cached."""
        self.token.cancel(reason)

    def done(self) -> bool:
        """Whether the run has ended (completed, failed or cancelled)."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> Run:
        """Wait for the run; return it, or raise its error (``CancelledError`` if cancelled)."""
        return self._future.result(timeout)

    def wait_started(self, timeout: float | None = None) -> Run | None:
        """Block until the run has started (or ended); return the live run."""
        self._started.wait(timeout)
        return self.run

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"<RunHandle {state} {self.run!r}>"
