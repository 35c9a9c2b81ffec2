"""Every issue-12 target, measured side by side with its anchor in one run; the README table.

Each target is a function returning :class:`Row` s: what is measured, the
anchor's figure, lazyflow's figure, the ratio and whether the target is met.
The measurements reuse the benchmark scripts beside this one (``overhead.py``,
``tiers.py``, ...), so a figure here is the figure those scripts print.
``--write-readme`` replaces the table between the ``targets`` markers of
``benchmarks/README.md``, so the README is regenerated, never hand-copied.

Run: ``python benchmarks/targets.py [--quick] [--only 1,5] [--write-readme]``
(``--quick`` skips the 10,000-node dask chain, which takes dask ~48 s to build).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.setrecursionlimit(100_000)  # dask computes a 10,000-node chain recursively

import dask  # noqa: E402
import history  # noqa: E402
import maps  # noqa: E402
import overhead  # noqa: E402
import parallel  # noqa: E402
import tiers  # noqa: E402

import lazyflow as lf  # noqa: E402
from lazyflow.history import flush as flush_history  # noqa: E402

START, END = "<!-- targets:start -->", "<!-- targets:end -->"


@dataclass
class Row:
    """One measured target."""

    target: str
    measured: str
    anchor: str
    ours: str
    ratio: float | None
    limit: str
    met: bool
    note: str = ""  # said beside "met?", e.g. for a shape beyond the issue's own


def _cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = time.process_time()
    result = fn()
    return time.process_time() - t0, result


def _lazyflow_phases(g: overhead.Graph, disk: str | None) -> dict[str, float]:
    """Build, first run and a warm request of ``g`` on memory (+ disk) — CPU seconds, the
    history the requests cause flushed inside them."""
    cache = lf.Cache(memory="4GB", disk=disk)
    flow = lf.Flow(g.module.__name__, cache=cache)

    def build() -> None:
        for f in g.functions():
            flow.node(f)

    def request() -> Any:
        value = flow.get(g.target, x=1)
        flush_history()
        cache.flush()
        return value

    out = {"build": _cpu(build)[0]}
    out["cold"], value = _cpu(request)
    out["warm"], again = _cpu(request)
    assert value == again == overhead.expected(g)
    return out


def _dask_cold(g: overhead.Graph) -> float:
    """dask.delayed's synchronous compute of ``g``, built once beforehand (CPU seconds)."""
    funcs = dict(zip(g.order, g.functions(), strict=True))
    delayed: dict[str, Any] = {}
    for name in g.order:
        args = [delayed[d] for d in g.deps[name]] or [1]
        delayed[name] = dask.delayed(funcs[name], pure=True)(*args)
    seconds, value = _cpu(lambda: delayed[g.target].compute(scheduler="sync"))
    assert value == overhead.expected(g)
    return seconds


def _medians(shape: str, size: int, reps: int, disk: bool) -> tuple[dict[str, float], float]:
    """Per-node µs medians of lazyflow's phases and of dask's compute, interleaved."""
    ours: dict[str, list[float]] = {"build": [], "cold": [], "warm": []}
    theirs: list[float] = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as folder:
            g = overhead.make_graph(shape, size)
            for phase, seconds in _lazyflow_phases(g, folder if disk else None).items():
                ours[phase].append(seconds / size * 1e6)
        theirs.append(_dask_cold(overhead.make_graph(shape, size)) / size * 1e6)
    return {p: statistics.median(v) for p, v in ours.items()}, statistics.median(theirs)


def first_runs(quick: bool) -> list[Row]:
    """Targets 1, 2 and 5: first run on memory and on memory + disk against dask.delayed's
    synchronous scheduler; warm and build figures of the same runs."""
    rows = []
    for shape, size in (("chain", 1000), ("tree", 1000), ("chain", 10000), ("tree", 10000)):
        if quick and size == 10000 and shape == "chain":
            continue
        reps = 5 if size == 1000 else (1 if shape == "chain" else 3)
        for disk in (False, True):
            ours, dask_us = _medians(shape, size, reps, disk)
            tier = "memory + disk" if disk else "memory"
            what = f"{shape} of {size:,}, {tier}"
            limit = 1.2 if disk else 0.4
            ratio = ours["cold"] / dask_us
            rows.append(Row(f"12.{2 if disk else 1} first run", what,
                            f"dask.delayed sync {dask_us:.1f} µs/node",
                            f"{ours['cold']:.1f} µs/node", ratio, f"<= {limit}x", ratio <= limit))
            rows.append(Row("12.5 warm", what, "-", f"{ours['warm']:.2f} µs/node", None,
                            "<= 5 µs/node", ours["warm"] <= 5))
            if not disk:
                rows.append(Row("12.5 build", what, "-", f"{ours['build']:.2f} µs/node", None,
                                "<= 10 µs/node", ours["build"] <= 10))
    return rows


def new_process_warm(quick: bool) -> list[Row]:
    """Target 7: a new process's warm disk request of a 100 MB array against np.load."""
    found = {r["who"]: r["seconds"] for r in tiers.bench_warm_request(100 * 2**20 // 8,
                                                                      3 if quick else 7)}
    anchor = found["np.load of the value alone"]
    ours = found["flow.get, target on disk only"]
    return [Row("12.7 new process, warm disk", "100 MB float64 array, checksum verified",
                f"np.load {anchor * 1e3:.1f} ms", f"{ours * 1e3:.1f} ms", ours / anchor,
                "<= 1.2x", ours / anchor <= 1.2)]


def map_bookkeeping(quick: bool) -> list[Row]:
    """Target 3: a 20,000-element map on the disk tier against plain diskcache."""
    n, reps = 20_000, 3 if quick else 5
    sets, gets, first, appended, calls = [], [], [], [], set()
    for _ in range(reps):  # interleaved, so drift hits both sides alike
        s, g = maps.plain_sets(n)
        f, a, c = maps.lazyflow_map(n, memory=False)
        sets.append(s)
        gets.append(g)
        first.append(f)
        appended.append(a)
        calls.add(c)
    med = {k: statistics.median(v) for k, v in
           (("sets", sets), ("gets", gets), ("first", first), ("appended", appended))}
    return [
        Row("12.3 map, first run", f"{n:,} ints, disk tier",
            f"{n:,} diskcache sets {med['sets'] * 1e3:.0f} ms", f"{med['first'] * 1e3:.0f} ms",
            med["first"] / med["sets"], "<= 0.5x", med["first"] / med["sets"] <= 0.5),
        Row("12.3 map, one appended", f"{n + 1:,} ints, disk tier ({sorted(calls)} call)",
            f"{n:,} diskcache gets {med['gets'] * 1e3:.0f} ms",
            f"{med['appended'] * 1e3:.1f} ms", med["appended"] / med["gets"], "<= 0.1x",
            med["appended"] / med["gets"] <= 0.1 and calls == {1}),
    ]


def history_overhead(quick: bool) -> list[Row]:
    """Target 4: a warm request with history on against off (``history.py``: 1 and 100
    cached targets of a 100-node chain; the writer's flush counted; CPU of both threads)."""
    rows = []
    for label, ratio, off in history.figures(21 if quick else 41):
        rows.append(Row("12.4 history", label, f"history off {off * 1e6:.1f} µs",
                        f"history on {off * ratio * 1e6:.1f} µs", ratio, "<= 1.1x",
                        ratio <= 1.1))
    return rows


def dask_throughput(quick: bool) -> list[Row]:
    """Target 6: 500 trivial nodes on a LocalCluster, against dask.delayed on the same
    client (``parallel.py``), as a chain, a fan-in tree and independent targets. Wall
    clock, as a cluster's throughput is."""
    rows = []
    for label, n, got in parallel.cluster_figures(3 if quick else 5):
        ours, theirs = got[parallel.OURS], got[parallel.THEIRS]
        ratio = theirs / ours
        # the issue names a chain and a wide graph; the fan-in tree is measured beside them
        note = "(a shape beyond the issue's chain and wide graph)" if "tree" in label else ""
        rows.append(Row("12.6 Dask throughput", f"LocalCluster (2 workers), {label}, wall clock",
                        f"dask.delayed {theirs / n * 1e3:.2f} ms/node",
                        f"{ours / n * 1e3:.2f} ms/node", ratio, ">= 0.8x", ratio >= 0.8, note))
    return rows


TARGETS: dict[str, Callable[[bool], list[Row]]] = {
    "1": first_runs,
    "3": map_bookkeeping,
    "4": history_overhead,
    "6": dask_throughput,
    "7": new_process_warm,
}


def table(rows: list[Row]) -> str:
    """The rows as the Markdown table the README leads with."""
    lines = ["| target | measured | anchor | lazyflow | ratio | target | met? |",
             "|---|---|---|---|---:|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        lines.append(f"| {r.target} | {r.measured} | {r.anchor} | {r.ours} | {ratio} | "
                     f"{r.limit} | {'yes' if r.met else '**no**'}{' ' + r.note if r.note else ''} |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    """Replace the table between the markers of ``benchmarks/README.md``."""
    readme = HERE / "README.md"
    content = readme.read_text()
    start, end = content.index(START) + len(START), content.index(END)
    readme.write_text(content[:start] + "\n" + text + "\n" + content[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="comma-separated target groups: " + ",".join(TARGETS))
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(TARGETS)
    rows = [row for name in chosen for row in TARGETS[name](args.quick)]
    text = f"python {sys.version.split()[0]}, lazyflow {lf.__version__}, dask {dask.__version__}" \
        f", CPU clock unless a row says otherwise\n\n{table(rows)}"
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
