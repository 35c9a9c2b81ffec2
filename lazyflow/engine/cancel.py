"""Cancellation tokens: ask a run to stop at the next node boundary."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
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
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._ids = itertools.count()

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation (idempotent; the first reason is kept)."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            callback()
        self.future.set_result(reason)

    def on_cancel(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once when cancelled (now, if already); return an unsubscriber.

        Unlike a callback on :attr:`future`, which lives as long as the token,
        a subscription ends when its run does: a token reused for many runs
        holds none of them.
        """
        if not callable(callback):
            raise TypeError(f"CancelToken.on_cancel needs a callable taking no arguments, "
                            f"got {callback!r}")
        with self._lock:
            if not self._event.is_set():
                ident = next(self._ids)
                self._callbacks[ident] = callback
                return lambda: self._unsubscribe(ident)
        callback()
        return lambda: None

    def _unsubscribe(self, ident: int) -> None:
        with self._lock:
            self._callbacks.pop(ident, None)

    @property
    def cancelled(self) -> bool:
        """Whether cancellation was requested."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass; return whether cancelled."""
        return self._event.wait(timeout)


def _register() -> None:
    from lazyflow.keys.hashing import register_hasher

    # a token is control, not data: reading one must never invalidate a node
    register_hasher(CancelToken, lambda token: "CancelToken")


_register()
