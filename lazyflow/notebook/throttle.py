"""Rate-limit a redraw: at most one call per interval, and always a trailing one.

Design note
-----------
A burst of events (hundreds of fast nodes) must not become hundreds of
redraws, yet the last state must always be drawn. The first call in a quiet
period runs at once; calls within ``interval`` of it only arm one timer that
runs the function when the interval is over. :meth:`now` draws immediately
(run start and end). :meth:`after` asks for a call within a delay even
without events: the widget's clock ticks that way while a run goes on (a
node may run for minutes without an event), each draw arming the next tick
until the run is over. One timer serves both: an event's trailing call that
is due sooner replaces a tick armed for later. Rejected: drawing from a
fixed-rate ticker thread — it costs wake-ups while nothing happens and needs
stopping.
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
        self._due = float("inf")  # when the armed timer calls (by ``clock``)
        self._lock = threading.Lock()

    def __call__(self) -> None:
        """Ask for a call: run now if the interval has passed, else once it has."""
        with self._lock:
            now = self.clock()
            if self._timer is not None:
                if self._due <= max(self._last + self.interval, now):
                    return  # the armed call comes soon enough: it draws the latest state
                self._disarm()  # a tick armed for later: this call must come sooner
            if self._last + self.interval > now:
                self._arm(self._last + self.interval, now)
                return
            self._last = now
        self._call()

    def after(self, delay: float) -> None:
        """Make sure of a call within ``delay`` seconds, unless one is armed already."""
        with self._lock:
            if self._timer is None:
                now = self.clock()
                self._arm(now + delay, now)

    def now(self) -> None:
        """Call at once, and drop a pending trailing call."""
        with self._lock:
            self._disarm()
            self._last = self.clock()
        self._call()

    def flush(self) -> None:
        """Make an armed call at once (none armed: nothing happens)."""
        with self._lock:
            if self._timer is None:
                return
            self._disarm()
            self._last = self.clock()
        self._call()

    def stop(self) -> None:
        """Drop a pending call (the view is closed)."""
        with self._lock:
            self._disarm()

    def _arm(self, due: float, now: float) -> None:
        self._due = due
        self._timer = threading.Timer(due - now, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._due = float("inf")

    def _fire(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # disarmed as it started: whoever disarmed it called or re-armed
            self._timer = None
            self._due = float("inf")
            self._last = self.clock()
        self._call()

    def _call(self) -> None:
        self.calls += 1
        self.fn()
