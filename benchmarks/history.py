"""Cost of recording run history on warm requests, side by side in one process.

Alternates rounds with the recorder subscribed and unsubscribed (so drift
hits both equally) and prints medians and the ratio. Two shapes: one cached
target (the cheapest possible request, 1 node touched) and a request for all
100 nodes of a chain (100 hits).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

import lazyflow as lf
from lazyflow.events import GLOBAL
from lazyflow.history import _recorder, flush


def _chain(n: int) -> lf.Flow:
    flow = lf.Flow(f"chain{n}", cache=lf.Cache(disk=None))
    flow.node(lambda x: x, name="n0")
    for i in range(1, n):
        flow.add(lf.Node(lambda prev: prev + 1, name=f"n{i}", inputs={"prev": f"n{i - 1}"}))
    return flow


def _time(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def measure(label: str, fn, number: int, rounds: int = 15) -> None:
    recorder = _recorder()
    fn()
    on, events, off = [], [], []
    for _ in range(rounds):
        on.append(_time(fn, number))
        flush()
        recorder._unsubscribe()
        off.append(_time(fn, number))
        unsubscribe = GLOBAL.subscribe(lambda event: None)
        events.append(_time(fn, number))
        unsubscribe()
        recorder._unsubscribe = GLOBAL.subscribe(recorder._on_event)
    m_on, m_ev, m_off = (statistics.median(x) for x in (on, events, off))
    print(f"{label:<32} no subscriber {m_off * 1e6:7.1f} µs | engine events only "
          f"{m_ev * 1e6:7.1f} µs | history {m_on * 1e6:7.1f} µs | "
          f"history/none {m_on / m_off:5.3f}, history/events {m_on / m_ev:5.3f}")


def main() -> None:
    print(f"python {sys.version.split()[0]}; medians of 15 alternating rounds")
    with tempfile.TemporaryDirectory():
        flow = _chain(100)
        names = [f"n{i}" for i in range(100)]
        flow.get(names, x=1)
        measure("warm: 1 cached target", lambda: flow.get("n99", x=1), 2000)
        measure("warm: 100 cached targets", lambda: flow.get(names, x=1), 200)
        cold = _chain(20)
        counter = iter(range(10**9))
        measure("cold: 20-node chain, new input", lambda: cold.get("n19", x=next(counter)), 50)


if __name__ == "__main__":
    main()
