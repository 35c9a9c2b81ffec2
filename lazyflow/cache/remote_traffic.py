"""What a remote costs: requests and bytes, counted per method as they are sent.

Design note
-----------
Object stores bill per request, so the remote tier counts its own: every
request the object layer (``remote_objects.py``) sends is added here, under
its HTTP method (``GET``, ``PUT``, ``DELETE``, ``LIST``: a listing page, which
S3 sends as a GET), with the bytes of the body read or written. A listing of
many pages counts each page, a batch delete each batch: the figures are the
requests an S3 bill would list. On a folder (``file://``) each file operation
counts as the request it stands for.

The tier takes the figures at the end of each run (:meth:`Traffic.take`),
which resets them, so ``run.remote`` holds what that run cost; its manifest,
written in the background afterwards, is charged to it as queued, and its
requests are not counted again (:meth:`Traffic.elsewhere`); management
(``stats``, ``prune``...) takes them too, so its listings are not charged to
the next run. Runs that overlap in one process (threads) share the counter:
each is charged what was sent since the previous one ended.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections import Counter
from collections.abc import Iterator

__all__ = ["METHODS", "Traffic"]

_ELSEWHERE: contextvars.ContextVar[bool] = contextvars.ContextVar("lazyflow_charged_elsewhere",
                                                                 default=False)

METHODS = ("GET", "PUT", "DELETE", "LIST")
"""The methods counted, in the order a summary names them."""


class Traffic:
    """Requests and bytes per method since the last :meth:`take` (thread-safe).

    >>> traffic = Traffic()
    >>> traffic.add("GET", 120)
    >>> traffic.add("PUT", 300)
    >>> traffic.take()
    {'GET': {'requests': 1, 'bytes': 120}, 'PUT': {'requests': 1, 'bytes': 300}}
    >>> traffic.take()
    {}
    """

    def __init__(self) -> None:
        self._requests: Counter[str] = Counter()
        self._bytes: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def elsewhere(self) -> Iterator[None]:
        """Requests sent within (in this context: the calls it makes, on whichever thread)
        are not counted: they were charged when they were queued (a run's manifest,
        written after its run's figures were taken)."""
        token = _ELSEWHERE.set(True)
        try:
            yield
        finally:
            _ELSEWHERE.reset(token)

    def add(self, method: str, nbytes: int = 0, *, requests: int = 1) -> None:
        """Count ``requests`` of ``method`` moving ``nbytes`` (body bytes read or written)."""
        if _ELSEWHERE.get():
            return
        with self._lock:
            self._requests[method] += requests
            self._bytes[method] += nbytes

    def take(self) -> dict[str, dict[str, int]]:
        """The figures so far, per method (``{}`` when nothing was sent); then start again."""
        with self._lock:
            taken = {method: {"requests": self._requests[method], "bytes": self._bytes[method]}
                     for method in sorted(self._requests, key=_order) if self._requests[method]}
            self._requests.clear()
            self._bytes.clear()
        return taken


def _order(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)
