"""What the live widget costs a run: the same flow run bare, watched (throttled), watched (unthrottled).

A chain-and-fan flow of 200 nodes, each doing about 1 ms of arithmetic, is run
with fresh inputs (so every node computes) in three set-ups, interleaved
round by round so machine drift hits all alike; medians and ratios printed.
The widget has no front end here (ipywidgets without a kernel), so this
measures the model updates, SVG builds and widget state serialisation that a
notebook run pays, not the browser's drawing.

    python benchmarks/widget_overhead.py            # in this process
    python benchmarks/widget_overhead.py --kernel   # inside a real ipykernel (messages sent)
    python benchmarks/widget_overhead.py --slow-nodes   # ~10 ms nodes, 5 rounds
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import lazyflow as lf

NODES = 200
ROUNDS = 11


LOOP = 20_000  # ~1 ms per node; --slow-nodes makes it ~10 ms


def _work(x: int, k: int) -> int:
    total = 0
    for i in range(LOOP):
        total += (x * i) % 7
    return (x * 3 + k + (total & 1)) % 2**61  # distinct per input: no early cutoff


def build() -> lf.Flow:
    flow = lf.Flow("bench", cache=lf.Cache(disk=None))
    flow.node(name="n0")(lambda seed: _work(seed, 0))
    for i in range(1, NODES):
        up = f"n{max(0, i - 1 - (i % 3))}"
        flow.node(name=f"n{i}", inputs={"x": up})(lambda x, k=i: _work(x, k))
    return flow


def timed(flow: lf.Flow, seed: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads: redraws included) of one full run."""
    t0, c0 = time.perf_counter(), time.process_time()
    run = flow.run([f"n{i}" for i in range(NODES)], seed=seed)
    assert len(run.completed) == NODES
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    setups = {"bare": build(), "widget (0.1 s throttle)": build(),
              "widget (no throttle)": build()}
    widgets = {"widget (0.1 s throttle)": setups["widget (0.1 s throttle)"].widget(),
               "widget (no throttle)": setups["widget (no throttle)"].widget(interval=0)}
    wall: dict[str, list[float]] = {name: [] for name in setups}
    cpu: dict[str, list[float]] = {name: [] for name in setups}
    for r in range(ROUNDS):
        for name, flow in setups.items():
            w, c = timed(flow, seed=1000 + r)
            wall[name].append(w)
            cpu[name].append(c)
    base_wall, base_cpu = statistics.median(wall["bare"]), statistics.median(cpu["bare"])
    print(f"{NODES} nodes x ~{LOOP // 20_000} ms, median of {ROUNDS} rounds "
          "(CPU time counts every thread)")
    for name in setups:
        mw, mc = statistics.median(wall[name]), statistics.median(cpu[name])
        draws = widgets[name].throttle.calls / ROUNDS if name in widgets else 0
        print(f"{name:<26} wall {mw * 1e3:7.1f} ms x{mw / base_wall:.3f}   "
              f"cpu {mc * 1e3:7.1f} ms x{mc / base_cpu:.3f}   redraws/run {draws:.0f}")


def unit_costs() -> None:
    """CPU per event and per redraw, measured directly (robust where run timings are noisy)."""
    from lazyflow.engine.events import NodeFinished, NodeStarted

    flow = build()
    widget = flow.widget(interval=3600)
    run = flow.run([f"n{i}" for i in range(NODES)], seed=1)
    records = list(run.nodes.values())
    c0 = time.process_time()
    for record in records * 5:
        flow.events.emit(NodeStarted(run, record.name))
        flow.events.emit(NodeFinished(run, record))
    per_event = (time.process_time() - c0) / (len(records) * 10)
    c0 = time.process_time()
    for i in range(100):  # one node changes state between redraws, as mid-run
        flow.events.emit(NodeStarted(run, records[i].name))
        widget.redraw()
    per_redraw = (time.process_time() - c0) / 100
    print(f"per event {per_event * 1e6:.1f} µs, per redraw {per_redraw * 1e3:.2f} ms "
          f"(at 10 redraws/s: {per_redraw * 10 * 100:.1f}% of one core)")


def in_kernel() -> None:
    """Run :func:`main` inside a fresh ipykernel, where widget updates go out over ZeroMQ."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(f"%run {Path(__file__).resolve()}")])
    NotebookClient(nb, timeout=600, kernel_name="python3").execute()
    # %run executes this file as __main__ in the kernel: main() and unit_costs() both run
    print("in a kernel:", "".join(o.get("text", "") for o in nb.cells[0].outputs
                                  if o.get("name") == "stdout"))


if __name__ == "__main__":
    if "--slow-nodes" in sys.argv:
        LOOP, ROUNDS = LOOP * 10, 5
    in_kernel() if "--kernel" in sys.argv else main()
    if "--kernel" not in sys.argv:
        unit_costs()
