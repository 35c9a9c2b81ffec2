"""Per-call CPU time and peak memory, measured where the function runs.

Design note
-----------
CPU time is ``time.thread_time()`` of the thread that runs the call: the
process clock (and ``ru_maxrss``) are process-wide, so under threads they
would charge one node with its neighbours' work. It is exact on every
executor, since every executor runs a call on one thread.

Peak memory has no per-thread measure. Where the call has its process to
itself (a worker of the processes executor), the kernel's high-water mark
is reset before the call and read after it (Linux: ``/proc/self/clear_refs``
and ``VmHWM``), less what the worker held when the call began: exact, and
nearly free. Both measures report what the call added at its peak. Elsewhere it is opt-in with
``profile_memory=True`` on the node, through ``tracemalloc``, which slows
allocation-heavy code 2-4x and counts every thread's Python allocations
during the call (exact when nothing else runs: the sync executor); the peak
is then of Python-allocated memory, which numpy and pandas buffers are.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Final

__all__ = ["Measure", "dedicate_process"]

_OWN_PROCESS = [False]  # set in a processes-executor worker: one call at a time
_CLEAR_REFS: Final = "/proc/self/clear_refs"
_STATUS: Final = "/proc/self/status"


def dedicate_process() -> None:
    """This process runs one call at a time (a worker process): measure peaks exactly."""
    _OWN_PROCESS[0] = _can_reset_peak()


class Measure:
    """CPU time and, where asked or exact, peak memory of one call."""

    __slots__ = ("_base", "_cpu", "_mode", "_started_tracing")

    def __init__(self, memory: bool) -> None:
        self._mode = "process" if _OWN_PROCESS[0] else "tracemalloc" if memory else ""
        self._started_tracing = False
        self._base = 0
        if self._mode == "process":
            _reset_peak()
            self._base = _status("VmRSS:") or 0  # what the worker held before the call
        elif self._mode == "tracemalloc":
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
            else:
                tracemalloc.start()
                self._started_tracing = True
        self._cpu = time.thread_time()

    def stop(self) -> tuple[float, int | None]:
        """``(cpu seconds, peak bytes or None)`` since the measure started."""
        cpu = time.thread_time() - self._cpu
        if self._mode == "process":
            peak = _status("VmHWM:")
            return cpu, None if peak is None else max(0, peak - self._base)
        if self._mode == "tracemalloc":
            peak = tracemalloc.get_traced_memory()[1]
            if self._started_tracing:
                tracemalloc.stop()
            return cpu, peak
        return cpu, None


def _can_reset_peak() -> bool:
    try:
        _reset_peak()
        return _status("VmHWM:") is not None
    except OSError:
        return False


def _reset_peak() -> None:
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM) to the current one


def _status(field: str) -> int | None:
    """A memory figure of this process from ``/proc/self/status``, in bytes."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return None
