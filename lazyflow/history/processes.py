"""Which process recorded a run, and whether it still lives.

A run whose process died stays ``running`` in the file; readers call it
interrupted once its process is gone. Process ids are reused, so a process is
named by host, pid and start time (Linux: ``/proc/<pid>/stat``), and only a
live process with the same three counts as the recorder.
"""

from __future__ import annotations

import os
import socket

__all__ = ["alive", "process_start", "this_process"]

_PROCESS: dict[int, tuple[str, int, str | None]] = {}


def this_process() -> tuple[str, int, str | None]:
    """(host, pid, start time) of this process, read once: /proc reads take the mmap lock."""
    pid = os.getpid()  # a forked child reads its own
    found = _PROCESS.get(pid)
    if found is None:
        found = _PROCESS[pid] = (socket.gethostname(), pid, process_start(pid))
    return found


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell reused pids apart.

    ``"dead"`` for a zombie (it has finished running), ``None`` when it cannot be read.
    """
    try:
        # bytes: an ascii text file would import its codec, ~0.3 ms of a new process's
        # first request (the fields after the command's name are ascii anyway)
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    if fields and fields[0] in (b"Z", b"X"):  # a zombie has finished running
        return "dead"
    return fields[19].decode() if len(fields) > 19 else None


def alive(pid: int | None, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` (on this host) still runs.

    ``True`` when it cannot be told (no pid recorded): a run is never called
    interrupted on a guess.
    """
    if pid is None:
        return True  # cannot tell: leave it running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return now != "dead" and (start is None or now is None or now == start)
