"""Cost of recording run history on warm requests: history on against off, in one process.

Target (issue 12): history costs at most 1.1x on a warm request with one cached target
and with 100, the writer's flush counted.

A 100-node chain, every node cached; a request asks for the last node (one hit) or for
all 100 (100 hits). Three caches: the default layout (memory and disk tiers: hits from
memory, the history file beside the disk tier), memory only (hits from memory, the
history in an in-memory database), and disk only (hits from disk, a restarted kernel).

Each round times ``number`` requests twice, in alternating order: with history off
(nothing subscribed to the event bus, so the engine builds no events) and on (the
recorder subscribed; the timing ends with ``flush()``, so the writer thread's work —
building rows, the SQLite commit, its wake-up — is counted as if it ran on the request's
thread). Prints the medians of per-request times and their ratio, in CPU time of the
whole process (both threads; what to read on a machine other work shares) and in wall
time.

    python benchmarks/history.py [--rounds 41]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import lazyflow as lf
from lazyflow.history import flush, start_recording

try:
    from lazyflow.engine.events import GLOBAL  # the engine as a package (issue 11's layers)
except ImportError:
    from lazyflow.events import GLOBAL  # type: ignore[no-redef]

try:
    from lazyflow.history.recorder import process_recorder
except ImportError:  # a lazyflow before history became a package, to compare with
    from lazyflow.history import _recorder as process_recorder  # type: ignore[attr-defined,no-redef]


def _chain(name: str, cache: lf.Cache, n: int = 100) -> lf.Flow:
    flow = lf.Flow(name, cache=cache)
    flow.node(lambda x: x, name="n0")
    for i in range(1, n):
        flow.add(lf.Node(lambda prev: prev + 1, name=f"n{i}", inputs={"prev": f"n{i - 1}"}))
    return flow


def _history(on: bool) -> None:
    """Subscribe the recorder (``on``), as it subscribes itself, or nothing at all."""
    recorder = process_recorder()
    flush()
    recorder._unsubscribe()
    recorder._unsubscribe = _subscribe(recorder._on_event) if on else (lambda: None)


def _subscribe(listener: Callable[[object], None]) -> Callable[[], None]:
    """Subscribe the recorder to run events only, as it does itself."""
    try:
        return GLOBAL.subscribe(listener, nodes=False)
    except TypeError:  # a lazyflow whose recorder takes node events too, to compare with
        return GLOBAL.subscribe(listener)


def _time(request: Callable[[], object], number: int, on: bool) -> tuple[float, float]:
    """(CPU, wall) seconds per request; with history on, committing what they recorded
    included."""
    _history(on)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(number):
        request()
    if on:
        flush()
    return (time.process_time() - cpu) / number, (time.perf_counter() - wall) / number


def measure(label: str, request: Callable[[], object], number: int, rounds: int
            ) -> tuple[float, float]:
    """Print and return the ratio of median per-request CPU times, history on / off, and
    the median CPU seconds a request with history off."""
    request()
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    for i in range(rounds):
        for on in ((False, True) if i % 2 else (True, False)):  # neither always first
            times[on].append(_time(request, number, on))
    _history(True)
    (cpu_off, cpu_on), (wall_off, wall_on) = (
        [statistics.median(t[k] for t in times[on]) for on in (False, True)] for k in (0, 1))
    print(f"| {label} | {cpu_off * 1e6:.1f} µs | {cpu_on * 1e6:.1f} µs | "
          f"**{cpu_on / cpu_off:.3f}** | {wall_off * 1e6:.1f} µs | {wall_on * 1e6:.1f} µs | "
          f"{wall_on / wall_off:.3f} |", flush=True)
    return cpu_on / cpu_off, cpu_off


def figures(rounds: int) -> list[tuple[str, float, float]]:
    """Measure every configuration (printing each row as it comes); per configuration its
    label, the ratio history on / off, and the CPU seconds a request with history off."""
    start_recording()
    print("| warm request | CPU off | CPU on | CPU on / off | wall off | wall on | wall on / off |\n"
          "|---|---|---|---|---|---|---|")
    names = [f"n{i}" for i in range(100)]
    found = []
    with tempfile.TemporaryDirectory() as default_dir, tempfile.TemporaryDirectory() as disk_dir:
        caches = {"memory hits, history file beside the disk tier":
                  lf.Cache(memory="1GB", disk=default_dir, remote=None),
                  "memory hits, no disk tier (history in memory)":
                  lf.Cache(memory="1GB", disk=None, remote=None),
                  "disk hits (no memory tier)": lf.Cache(memory=None, disk=disk_dir, remote=None)}
        for i, (where, cache) in enumerate(caches.items()):
            flow = _chain(f"chain{i}", cache)
            flow.get(names, x=1)
            disk = cache.tiers[0].name == "disk"
            for label, request, number in (
                    (f"1 cached target, {where}", lambda f=flow: f.get("n99", x=1),
                     50 if disk else 100),
                    (f"100 cached targets, {where}", lambda f=flow: f.get(names, x=1),
                     5 if disk else 30)):
                found.append((label, *measure(label, request, number, rounds)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; medians of {args.rounds} alternating rounds\n")
    figures(args.rounds)


if __name__ == "__main__":
    main()
