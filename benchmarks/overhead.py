"""Per-node overhead of lazyflow and its peers, side by side in one process.

For chains and fan-in trees of 100, 1,000 and 10,000 trivial nodes, measure
per node (µs): graph **build**, **cold** run and **warm** run (a repeated
request answered from the framework's own cache), for

* lazyflow (memory tier only, or with ``--tier disk`` the default configuration: memory
  plus a disk tier in a fresh temporary folder per repetition, whose run history is a file
  there as by default; each timed request ends with ``lazyflow.history.flush()``, so the
  run-history rows it causes, written on a background thread, count in its own phase and
  not in the next one, and with ``Cache.flush()`` as every run does: the disk tier's last
  batch of writes counts),
* plain function calls (the floor: no graph, no cache),
* dask.delayed with the synchronous scheduler (no cache: no warm run),
* Hamilton (sf-hamilton): cold without a cache, warm with ``with_cache()``,
* pipefunc with its in-memory ``simple`` cache,
* joblib.Memory wrapping each function (a disk cache in a temporary folder).

Every measurement builds fresh functions (a new module per repetition, so
nothing is shared between frameworks or repetitions), collects garbage, then
times one phase with ``time.perf_counter`` (or, with ``--clock cpu``, the
process's CPU time, which other processes on the machine disturb less); the
garbage collector stays on, as in real use. Medians over the repetitions are reported, with the ratio of
each peer to lazyflow (above 1: lazyflow is faster). A peer is skipped at a
size where it is known to take over 60 s or to exceed Python's default
recursion limit, and the output says so; a ``RecursionError`` met at run time
is reported the same way.

Run: ``python benchmarks/overhead.py`` (``--sizes 100,1000`` to limit,
``--markdown FILE`` to also write the tables).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import joblib
from hamilton import driver
from pipefunc import Pipeline, pipefunc

import lazyflow as lf
from lazyflow.history import flush as flush_history

PHASES = ("build", "cold", "warm")
FRAMEWORKS = ("lazyflow", "plain", "dask.delayed", "hamilton", "pipefunc", "joblib.Memory")

# (framework, shape, size) -> why it is not run. Measured on these machines (FACTS.md):
# pipefunc builds quadratically (61 s for a 1,000-node chain, then a RecursionError);
# dask.delayed builds a chain quadratically (48 s at 10,000 nodes);
# Hamilton walks the graph recursively (RecursionError on a 1,000-node chain).
SKIPS: dict[tuple[str, str, int], str] = {
    ("pipefunc", "chain", 1000): "quadratic build: over 60 s, then RecursionError",
    ("pipefunc", "chain", 10000): "quadratic build: over 60 s",
    ("pipefunc", "tree", 1000): "quadratic build: over 60 s",
    ("pipefunc", "tree", 10000): "quadratic build: over 60 s",
    ("dask.delayed", "chain", 10000): "quadratic build: about 48 s a repetition",
    ("hamilton", "chain", 10000): "RecursionError at the default recursion limit",
}


# --------------------------------------------------------------------------- graphs


@dataclass
class Graph:
    """A generated module of trivial functions wired by parameter name."""

    shape: str
    size: int
    module: Any
    order: list[str]  # topological: dependencies first
    deps: dict[str, list[str]]
    target: str

    def functions(self) -> list[Callable[..., Any]]:
        return [getattr(self.module, name) for name in self.order]


_counter = 0
_SOURCES = tempfile.TemporaryDirectory(prefix="lazyflow-bench-")


def make_graph(shape: str, size: int) -> Graph:
    """A fresh module holding a chain (``n_i`` reads ``n_{i-1}``) or a binary fan-in tree."""
    global _counter
    _counter += 1
    deps: dict[str, list[str]] = {}
    if shape == "chain":
        names = [f"n{i}" for i in range(size)]
        for i, name in enumerate(names):
            deps[name] = [names[i - 1]] if i else []
        order, target = names, names[-1]
    else:  # heap layout: node i reads nodes 2i+1 and 2i+2
        names = [f"t{i}" for i in range(size)]
        for i, name in enumerate(names):
            deps[name] = [names[c] for c in (2 * i + 1, 2 * i + 2) if c < size]
        order, target = names[::-1], names[0]
    lines = []
    for name in names:
        params = deps[name] or ["x"]
        body = " + ".join(params) + (" + 1" if len(params) == 1 else "")
        lines.append(f"def {name}({', '.join(p + ': int' for p in params)}) -> int:\n"
                     f"    return {body}\n")
    # a real file: Hamilton and joblib read functions' source, and find them by module
    name = f"bench_{shape}_{size}_{_counter}"
    path = pathlib.Path(_SOURCES.name) / f"{name}.py"
    path.write_text("".join(lines))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return Graph(shape, size, module, order, deps, target)


# --------------------------------------------------------------------------- frameworks
# Each runner takes a fresh graph and returns {phase: seconds} for the phases it has.


CLOCK = time.perf_counter  # --clock cpu switches to time.process_time


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    t0 = CLOCK()
    result = fn()
    return CLOCK() - t0, result


TIER = "memory"  # --tier disk: memory plus a disk tier, the default configuration


def run_lazyflow(g: Graph) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lazyflow-bench-disk-") as folder:
        disk = folder if TIER == "disk" else None
        return _run_lazyflow(g, lf.Flow(g.module.__name__,
                                        cache=lf.Cache(memory="4GB", disk=disk)))


def _run_lazyflow(g: Graph, flow: lf.Flow) -> dict[str, float]:
    funcs = g.functions()

    def build() -> None:
        for f in funcs:
            flow.node(f)

    def request() -> Any:
        value = flow.get(g.target, x=1)
        flush_history()  # the run history a request causes is part of its cost, not the next one's
        return value

    out = {"build": _timed(build)[0]}
    out["cold"], value = _timed(request)
    out["warm"], again = _timed(request)
    assert value == again == expected(g)
    return out


def run_plain(g: Graph) -> dict[str, float]:
    funcs = dict(zip(g.order, g.functions(), strict=True))

    def call() -> int:
        values: dict[str, int] = {}
        for name in g.order:
            args = [values[d] for d in g.deps[name]] or [1]
            values[name] = funcs[name](*args)
        return values[g.target]

    seconds, value = _timed(call)
    assert value == expected(g)
    return {"cold": seconds}


def run_dask(g: Graph) -> dict[str, float]:
    funcs = dict(zip(g.order, g.functions(), strict=True))

    def build() -> Any:
        delayed: dict[str, Any] = {}
        for name in g.order:
            args = [delayed[d] for d in g.deps[name]] or [1]
            delayed[name] = dask.delayed(funcs[name], pure=True)(*args)
        return delayed[g.target]

    seconds, target = _timed(build)
    cold, value = _timed(lambda: target.compute(scheduler="sync"))
    assert value == expected(g)
    return {"build": seconds, "cold": cold}


def run_hamilton(g: Graph) -> dict[str, float]:
    seconds, dr = _timed(lambda: driver.Builder().with_modules(g.module).build())
    cold, result = _timed(lambda: dr.execute([g.target], inputs={"x": 1}))
    assert result[g.target] == expected(g)
    with tempfile.TemporaryDirectory() as tmp:
        cached = driver.Builder().with_modules(g.module).with_cache(path=tmp).build()
        cached.execute([g.target], inputs={"x": 1})
        warm, result = _timed(lambda: cached.execute([g.target], inputs={"x": 1}))
    assert result[g.target] == expected(g)
    return {"build": seconds, "cold": cold, "warm": warm}


def run_pipefunc(g: Graph) -> dict[str, float]:
    funcs = g.functions()
    seconds, pipeline = _timed(lambda: Pipeline(
        [pipefunc(output_name=f.__name__, cache=True)(f) for f in funcs], cache_type="simple"))
    cold, value = _timed(lambda: pipeline(g.target, x=1))
    warm, again = _timed(lambda: pipeline(g.target, x=1))
    assert value == again == expected(g)
    return {"build": seconds, "cold": cold, "warm": warm}


def run_joblib(g: Graph) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        memory = joblib.Memory(tmp, verbose=0)
        funcs = g.functions()
        seconds, cached = _timed(lambda: {f.__name__: memory.cache(f) for f in funcs})

        def call() -> int:
            values: dict[str, int] = {}
            for name in g.order:
                args = [values[d] for d in g.deps[name]] or [1]
                values[name] = cached[name](*args)
            return values[g.target]

        cold, value = _timed(call)
        warm, again = _timed(call)
    assert value == again == expected(g)
    return {"build": seconds, "cold": cold, "warm": warm}


RUNNERS: dict[str, Callable[[Graph], dict[str, float]]] = {
    "lazyflow": run_lazyflow, "plain": run_plain, "dask.delayed": run_dask,
    "hamilton": run_hamilton, "pipefunc": run_pipefunc, "joblib.Memory": run_joblib,
}


def expected(g: Graph) -> int:
    """The target's value, computed without any framework."""
    values: dict[str, int] = {}
    for name in g.order:
        args = [values[d] for d in g.deps[name]] or [1]
        values[name] = sum(args) + (1 if len(args) == 1 else 0)
    return values[g.target]


# --------------------------------------------------------------------------- driver


@dataclass
class Cell:
    """The repeated measurements of one framework on one graph."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    note: str = ""

    def median_us(self, phase: str, size: int) -> float | None:
        values = self.samples[phase]
        return statistics.median(values) / size * 1e6 if values else None


def repetitions(size: int, framework: str, shape: str) -> int:
    if framework == "dask.delayed" and shape == "chain" and size >= 1000:
        return 3 if size == 1000 else 1
    return {100: 7, 1000: 5}.get(size, 3)


def measure(shape: str, size: int, frameworks: list[str]) -> dict[str, Cell]:
    cells: dict[str, Cell] = {}
    for framework in frameworks:
        cell = cells[framework] = Cell()
        skip = SKIPS.get((framework, shape, size))
        if skip:
            cell.note = f"skipped: {skip}"
            continue
        for _ in range(repetitions(size, framework, shape)):
            g = make_graph(shape, size)
            try:
                result = RUNNERS[framework](g)
            except RecursionError:
                cell.note = "RecursionError at the default recursion limit"
                break
            finally:
                sys.modules.pop(g.module.__name__, None)
            for phase, seconds in result.items():
                cell.samples[phase].append(seconds)
        print(f"  {shape:5} {size:>6} {framework:14} "
              + "  ".join(f"{p} {_fmt(cell.median_us(p, size))}" for p in PHASES)
              + (f"  ({cell.note})" if cell.note else ""), flush=True)
    return cells


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 10 else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _ratio(peer: float | None, ours: float | None) -> str:
    if peer is None or ours is None or ours == 0:
        return "-"
    return f"{peer / ours:,.1f}x"


def table(shape: str, size: int, cells: dict[str, Cell]) -> str:
    ours = cells["lazyflow"]
    where = ", lazyflow on memory + disk" if TIER == "disk" else ""
    rows = [f"**{shape}, {size:,} nodes{where}** (µs per node, median; ratio = peer / lazyflow)",
            "",
            "| framework | build | cold | warm | build ratio | cold ratio | warm ratio | note |",
            "|---|---:|---:|---:|---:|---:|---:|---|"]
    for framework, cell in cells.items():
        values = [cell.median_us(p, size) for p in PHASES]
        ratios = ["" if framework == "lazyflow"
                  else _ratio(v, ours.median_us(p, size)) for p, v in zip(PHASES, values,
                                                                           strict=True)]
        rows.append(f"| {framework} | " + " | ".join(_fmt(v) for v in values) + " | "
                    + " | ".join(ratios) + f" | {cell.note} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--shapes", default="chain,tree")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter; cpu: time.process_time (this process's "
                             "CPU time, steadier when other processes share the cores)")
    parser.add_argument("--tier", choices=("memory", "disk"), default="memory",
                        help="lazyflow's cache: memory only, or memory plus a disk tier (the "
                             "default configuration) in a fresh temporary folder")
    parser.add_argument("--markdown", help="also write the result tables to this file")
    args = parser.parse_args()
    global CLOCK, TIER
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    TIER = args.tier
    warnings.filterwarnings("ignore")  # peers warn about untyped or unhashable things
    logging.disable(logging.WARNING)
    frameworks = args.frameworks.split(",")
    if "lazyflow" not in frameworks:
        frameworks.insert(0, "lazyflow")
    print(f"python {sys.version.split()[0]}, lazyflow {lf.__version__}, dask {dask.__version__}, "
          f"joblib {joblib.__version__}, recursion limit {sys.getrecursionlimit()}, "
          f"clock {args.clock}, lazyflow tier {args.tier}")
    tables = []
    for size in (int(s) for s in args.sizes.split(",")):
        for shape in args.shapes.split(","):
            tables.append(table(shape, size, measure(shape, size, frameworks)))
    report = "\n\n".join(tables)
    print("\n" + report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
