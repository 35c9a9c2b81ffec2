"""Cancellation tokens: ask a run to stop at the next node boundary."""

from __future__ import annotations

import threading
from concurrent.futures import Future

__all__ = ["CancelToken"]


class CancelToken:
    """A flag a run checks between nodes; set it from any thread to stop the run.

    Nodes already finished stay cached; nodes not started are marked
    ``"cancelled"``; the run raises :class:`lazyflow.CancelledError`.

    >>> token = CancelToken()
    >>> token.cancel("user pressed Cancel")
    >>> token.cancelled, token.reason
    (True, 'user pressed Cancel')
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason = ""
        self.future: Future[str] = Future()
        """Resolves (to the reason) when cancelled: schedulers wait on it with their tasks."""

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation (idempotent; the first reason is kept)."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
        self.future.set_result(reason)

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; return whether cancelled."""
        return self._event.wait(timeout)


def _register() -> None:
    from lazyflow.hashing import register_hasher

    # a token is control, not data: reading one must never invalidate a node
    register_hasher(CancelToken, lambda token: "CancelToken")


_register()
