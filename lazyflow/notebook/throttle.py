"""Rate-limit a redraw: at most one call per interval, and always a trailing one.

Design note
-----------
A burst of events (hundreds of fast nodes) must not become hundreds of
redraws, yet the last state must always be drawn. The first call in a quiet
period runs at once; calls within ``interval`` of it only arm one timer that
runs the function when the interval is over. :meth:`now` draws immediately
(run start and end). Rejected: drawing from a fixed-rate ticker thread — it
costs wake-ups while nothing happens and needs stopping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Throttle"]


class Throttle:
    """Call ``fn`` at most once per ``interval`` seconds, never dropping the last call."""

    def __init__(self, fn: Callable[[], Any], interval: float = 0.1, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.fn = fn
        self.interval = interval
        self.clock = clock
        self.calls = 0
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        """Ask for a call: run now if the interval has passed, else once it has."""
        with self._lock:
            if self._timer is not None:
                return  # a trailing call is armed: it will draw the latest state
            wait = self._last + self.interval - self.clock()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = self.clock()
        self._call()

    def now(self) -> None:
        """Call at once, and drop a pending trailing call."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last = self.clock()
        self._call()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            self._last = self.clock()
        self._call()

    def _call(self) -> None:
        self.calls += 1
        self.fn()
