"""Cost of recording run history on warm requests, side by side in one process.

Alternates rounds with the recorder subscribed, with nothing subscribed, and
with a no-op subscriber (the engine's own cost of building events), so drift
hits all three equally; prints medians and ratios. Shapes: one cached target
of a 100-node chain (1 node touched), all 100 nodes (100 hits), a cold
20-node chain, and the two warm shapes again served from the disk tier alone
(a restarted kernel).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import lazyflow as lf
from lazyflow.engine.events import GLOBAL
from lazyflow.history import flush
from lazyflow.history.recorder import process_recorder


def _chain(n: int, cache: lf.Cache | None = None) -> lf.Flow:
    flow = lf.Flow(f"chain{n}", cache=cache or lf.Cache(disk=None))
    flow.node(lambda x: x, name="n0")
    for i in range(1, n):
        flow.add(lf.Node(lambda prev: prev + 1, name=f"n{i}", inputs={"prev": f"n{i - 1}"}))
    return flow


def _time(fn, number: int) -> float:
    """Seconds per call, including committing what the calls recorded (the writer's work)."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    flush()
    return (time.perf_counter() - t0) / number


def measure(label: str, fn, number: int, rounds: int = 41) -> None:
    """Median seconds per call of ``fn`` under each configuration, in short rotating rounds."""
    recorder = process_recorder()
    fn()
    times: dict[str, list[float]] = {"none": [], "events": [], "history": []}

    def configure(mode: str) -> None:
        flush()
        recorder._unsubscribe()
        if mode == "history":
            recorder._unsubscribe = GLOBAL.subscribe(recorder._on_event)
        elif mode == "events":
            recorder._unsubscribe = GLOBAL.subscribe(lambda event: None)
        else:
            recorder._unsubscribe = lambda: None

    modes = list(times)
    for i in range(rounds):
        for mode in modes[i % 3:] + modes[:i % 3]:  # rotate the order: no mode always first
            configure(mode)
            times[mode].append(_time(fn, number))
    configure("none")
    recorder._unsubscribe = GLOBAL.subscribe(recorder._on_event)
    none, events, on = (statistics.median(times[m]) for m in modes)
    print(f"{label:<32} no subscriber {none * 1e6:7.1f} µs | engine events only "
          f"{events * 1e6:7.1f} µs | history {on * 1e6:7.1f} µs | "
          f"history/none {on / none:5.3f}, history/events {on / events:5.3f}")


def main() -> None:
    print(f"python {sys.version.split()[0]}; medians of 41 rotating rounds")
    with tempfile.TemporaryDirectory() as tmp:
        flow = _chain(100)
        names = [f"n{i}" for i in range(100)]
        flow.get(names, x=1)
        measure("warm: 1 cached target", lambda: flow.get("n99", x=1), 100)
        measure("warm: 100 cached targets", lambda: flow.get(names, x=1), 30)
        cold = _chain(20)
        counter = iter(range(10**9))
        measure("cold: 20-node chain, new input", lambda: cold.get("n19", x=next(counter)), 30)
        on_disk = _chain(100, lf.Cache(memory=None, disk=tmp, remote=None))
        on_disk.get(names, x=1)
        measure("warm from disk: 1 cached target", lambda: on_disk.get("n99", x=1), 50)
        measure("warm from disk: 100 targets", lambda: on_disk.get(names, x=1), 5)


if __name__ == "__main__":
    main()
