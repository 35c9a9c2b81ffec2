"""``flow.watch``: re-run a target whenever one of its input files changes content, or on a
timer (``every=``) for inputs no file tells about (an API, a database).

Design note
-----------
Policy. The files watched are the ``lf.File`` / ``lf.Dir`` values among the
target's flow inputs and parameter defaults, found by planning the request
again before every wait (a redefined node may read another file). A run
happens first; then the watcher waits for a file-system event (watchdog, from
the ``watch`` extra) or, without watchdog or with ``poll=True``, for the next
polling tick. An event only *wakes* the watcher: it re-runs when the content
digests of the watched files differ from those taken just before the last
run (``files.content_digest``, with its mtime+size fast path), so touching a
file or saving it unchanged does not re-run anything, and an edit made while
a run was going is caught at once. Even with watchdog the watcher re-checks
every ``interval`` seconds, so an event lost by the OS costs latency, never a
missed change.

A failing run prints its traceback and the watcher keeps going (fix the file,
save, and it runs again). It stops on Ctrl-C (KeyboardInterrupt), when the
``cancel`` token is set, or after ``max_runs`` runs, and returns the last run.

Rejected alternative: re-running on every event, as simple watchers do;
editors write a file in several steps (temporary file, rename, chmod) and
each would start a run of its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lazyflow.engine.cancel import CancelToken
from lazyflow.model.durations import seconds
from lazyflow.model.files import Dir, File, dir_digest

if TYPE_CHECKING:
    from lazyflow.api import Flow
    from lazyflow.run import Run

__all__ = ["Watcher", "watch"]


class Watcher:
    """What ``flow.watch`` watches and whether it changed, without any waiting.

    >>> watcher = Watcher(flow, "report", {"data": lf.File("a.csv")})   # doctest: +SKIP
    >>> watcher.snapshot(); watcher.changed()                           # doctest: +SKIP
    False
    """

    def __init__(self, flow: Flow, target: str, inputs: dict[str, Any]) -> None:
        self.flow = flow
        self.target = target
        self.inputs = inputs
        self._last: dict[str, str] = {}

    def files(self) -> list[File]:
        """The File and Dir inputs the target's request reads now."""
        plan = self.flow.plan(self.target, self.inputs)
        found = {id(v): v for params in plan.params.values() for v in params.values()
                 if isinstance(v, File)}
        return sorted(found.values(), key=lambda f: (str(f.path), type(f).__name__))

    def digests(self) -> dict[str, str]:
        """Content digest of each watched path."""
        return {f"{type(f).__name__}:{os.path.abspath(f.path)}":
                dir_digest(f.path) if isinstance(f, Dir) else f.digest for f in self.files()}

    def snapshot(self) -> None:
        """Remember the watched files' contents as they are now."""
        self._last = self.digests()

    def changed(self) -> bool:
        """Whether any watched file's content differs from the last snapshot."""
        return self.digests() != self._last

    def directories(self) -> Iterator[tuple[str, bool]]:
        """(directory, recursive) pairs a file-system observer must watch."""
        for f in self.files():
            if isinstance(f, Dir):
                yield os.path.abspath(f.path), True
            else:
                yield os.path.dirname(os.path.abspath(f.path)), False


def watch(flow: Flow, target: str, inputs: dict[str, Any], *, interval: float = 0.5,
          poll: bool = False, cancel: CancelToken | None = None,
          on_run: Callable[[Run], Any] | None = None, max_runs: int | None = None,
          every: Any = None) -> Run | None:
    """Run ``target`` now and again whenever a watched input file changes content, and
    every ``every`` (seconds, ``"10m"``, a timedelta) when given.

    Returns the last run when stopped (Ctrl-C, ``cancel``, or ``max_runs``).
    """
    period = seconds(every) if every is not None else None
    if every is not None and period is None:
        raise ValueError(f"watch(every=...) takes a positive number of seconds, a string such "
                         f"as '10m' or '1h', or a timedelta; got {every!r}")
    watcher = Watcher(flow, target, inputs)
    cancel = cancel or CancelToken()
    wake = threading.Event()
    stop_waking = cancel.on_cancel(wake.set)
    last: Run | None = None
    runs = 0
    with _observer(watcher, wake, poll) as observe:
        try:
            while not cancel.cancelled:
                watcher.snapshot()
                observe()
                run = _run_once(flow, target, inputs)
                if run is not None:
                    last = run
                    if on_run is not None:
                        on_run(run)
                runs += 1
                if max_runs is not None and runs >= max_runs:
                    break
                due = None if period is None else time.monotonic() + period
                while not cancel.cancelled and not watcher.changed():
                    if due is not None and time.monotonic() >= due:
                        break  # the timer: re-request (a hit if nothing changed upstream)
                    wake.wait(interval if due is None
                              else max(0.0, min(interval, due - time.monotonic())))
                    wake.clear()
        except KeyboardInterrupt:
            pass
        finally:
            stop_waking()
    return last


def _run_once(flow: Flow, target: str, inputs: dict[str, Any]) -> Run | None:
    try:
        run = flow.run(target, inputs=inputs)
    except Exception:
        print(f"lazyflow watch: run of {target!r} failed; watching for the next change",
              file=sys.stderr)
        traceback.print_exc()
        return None
    return run


@contextlib.contextmanager
def _observer(watcher: Watcher, wake: threading.Event, poll: bool
              ) -> Iterator[Callable[[], None]]:
    """Yield a function that (re)points a watchdog observer at the watched directories;
    with ``poll`` or without watchdog it does nothing and the watcher polls."""
    try:
        if poll:
            raise ImportError
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        yield lambda: None
        return

    class _Wake(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            wake.set()

    observer = Observer()
    handler = _Wake()
    watched: dict[tuple[str, bool], Any] = {}

    def observe() -> None:
        wanted = {(d, r) for d, r in watcher.directories() if os.path.isdir(d)}
        for stale in set(watched) - wanted:
            observer.unschedule(watched.pop(stale))
        for directory, recursive in wanted - set(watched):
            watched[(directory, recursive)] = observer.schedule(handler, directory,
                                                                recursive=recursive)

    observer.start()
    try:
        yield observe
    finally:
        observer.stop()
        observer.join()
