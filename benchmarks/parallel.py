"""Parallel execution, side by side with dask in one process run.

1. CPU-bound: 8 independent pure-Python nodes, lazyflow "sync" vs "processes"
   (2 workers) vs dask's multiprocessing scheduler (2 workers).
2. Scheduler overhead: 10,000 trivial nodes (a binary tree, every node
   requested through its leaves), lazyflow "threads" vs dask's threaded
   scheduler on the same graph.
3. Distributed throughput (issue 12, target 6): 500 trivial nodes on one
   LocalCluster (2 worker processes, 1 thread each), lazyflow executor=client vs
   dask.delayed, as a chain, a fan-in tree and 500 independent targets.
Plus the start-up of a process worker (cold) against a warm task round trip.

Rounds alternate between contenders so drift hits them alike; each figure is
a median. Run: ``python benchmarks/parallel.py`` (``--quick`` for fewer rounds;
``--only cluster`` for one section: startup, cpu, threads, cluster).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable

import dask
import distributed

import lazyflow as lf
from lazyflow.executors.base import Task
from lazyflow.executors.processes import ProcessExecutor

QUICK = "--quick" in sys.argv
ROUNDS = 3 if QUICK else 5


def burn(n: int) -> int:
    """Pure-Python CPU work (holds the GIL)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def _cpu_flow(work: int) -> lf.Flow:
    flow = lf.Flow("cpu", cache=lf.Cache(disk=None))
    for k in range(8):
        flow.node(name=f"cpu{k}", cache=False)(lambda k=k: burn(work + k))
    return flow


def _median_rounds(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()  # warm: pools started, functions fingerprinted
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cpu_bound() -> None:
    work = 3_000_000 if QUICK else 6_000_000
    flow = _cpu_flow(work)
    names = [f"cpu{k}" for k in range(8)]
    tasks = [dask.delayed(burn)(work + k) for k in range(8)]
    got = _median_rounds({
        "lazyflow sync": lambda: flow.get(names),
        "lazyflow processes": lambda: flow.get(names, executor="processes", max_workers=2),
        "dask multiprocessing": lambda: dask.compute(*tasks, scheduler="processes",
                                                     num_workers=2),
    }, ROUNDS)
    _report("8 CPU-bound nodes", got, "lazyflow sync")


def _tree_flow(n: int) -> tuple[lf.Flow, list[str]]:
    flow = lf.Flow("tree", cache=lf.Cache(disk=None))

    def make(i: int) -> Callable[..., int]:
        if i == 0:
            return lambda: 0
        return lambda parent: parent + i

    flow.node(name="t0")(make(0))
    for i in range(1, n):
        flow.node(name=f"t{i}", inputs={"parent": f"t{(i - 1) // 2}"})(make(i))
    return flow, [f"t{i}" for i in range(n // 2, n)]


def _add(parent: int, i: int) -> int:
    return parent + i


def scheduler_overhead() -> None:
    n = 10_000
    flow, leaves = _tree_flow(n)
    graph: dict[str, object] = {"t0": 0}
    for i in range(1, n):
        graph[f"t{i}"] = (_add, f"t{(i - 1) // 2}", i)
    from dask.threaded import get as threaded_get

    def lazyflow_threads() -> None:
        flow.cache.clear()  # every node computes (and is hashed, stored, recorded) each round
        flow.run(leaves, executor="threads", max_workers=2)

    def lazyflow_sync() -> None:
        flow.cache.clear()
        flow.run(leaves)

    got = _median_rounds({
        "lazyflow threads": lazyflow_threads,
        "lazyflow sync": lazyflow_sync,
        "dask threaded": lambda: threaded_get(graph, leaves, num_workers=2),
    }, ROUNDS)
    _report(f"{n:,} trivial nodes", got, "dask threaded", per=n)


def _chain_flow(n: int) -> tuple[lf.Flow, str]:
    flow = lf.Flow("chain", cache=lf.Cache(disk=None))
    flow.node(name="c0")(lambda: 0)
    for i in range(1, n):
        flow.node(name=f"c{i}", inputs={"previous": f"c{i - 1}"})(_inc)
    return flow, f"c{n - 1}"


def _fan_in_flow(n: int) -> tuple[lf.Flow, str]:
    """A binary fan-in tree of ``n`` nodes (odd): node i adds nodes 2i+1 and 2i+2."""
    flow = lf.Flow("fan_in", cache=lf.Cache(disk=None))
    for i in range(n):
        if 2 * i + 2 < n:
            flow.node(name=f"t{i}", inputs={"left": f"t{2 * i + 1}",
                                            "right": f"t{2 * i + 2}"})(_sum2)
        else:
            flow.node(name=f"t{i}")(lambda i=i: i)
    return flow, "t0"


def _inc(previous: int) -> int:
    return previous + 1


def _sum2(left: int, right: int) -> int:
    return left + right


def _identity(i: int) -> int:
    return i


def _dask_chain(n: int) -> list[object]:
    node = dask.delayed(_identity)(0, dask_key_name="c0")
    for i in range(1, n):
        node = dask.delayed(_inc)(node, dask_key_name=f"c{i}")
    return [node]


def _dask_fan_in(n: int) -> list[object]:
    nodes: dict[int, object] = {}
    for i in reversed(range(n)):
        nodes[i] = (dask.delayed(_sum2)(nodes[2 * i + 1], nodes[2 * i + 2], dask_key_name=f"t{i}")
                    if 2 * i + 2 < n else dask.delayed(_identity)(i, dask_key_name=f"t{i}"))
    return [nodes[0]]


OURS, THEIRS = "lazyflow executor=client", "dask.delayed on the client"


def cluster_figures(rounds: int) -> list[tuple[str, int, dict[str, float]]]:
    """Issue 12, target 6: lazyflow on a LocalCluster >= 0.8x dask.delayed's throughput.

    Every lazyflow node is cached (memory tier, emptied before each round so that every
    node computes, is hashed, stored and recorded); dask.delayed caches nothing. Returns
    per shape its label, its node count and the median seconds of ``OURS`` and ``THEIRS``.
    """
    chain_n, tree_n = 500, 501  # a fan-in tree where every inner node has two inputs
    chain, chain_target = _chain_flow(chain_n)
    tree, tree_target = _fan_in_flow(tree_n)
    wide = lf.Flow("wide", cache=lf.Cache(disk=None))
    for i in range(chain_n):
        wide.node(name=f"r{i}")(lambda i=i: i)
    wide_targets = [f"r{i}" for i in range(chain_n)]
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:

        def lazyflow(flow: lf.Flow, targets: object) -> Callable[[], object]:
            def run() -> object:
                flow.cache.clear()
                return flow.run(targets, executor=client)
            return run

        def delayed(tasks: list[object]) -> Callable[[], object]:
            return lambda: dask.compute(*tasks, scheduler=client)

        independent = [dask.delayed(_identity)(i, dask_key_name=f"r{i}") for i in range(chain_n)]
        shapes = [
            (f"chain of {chain_n}", chain_n, lazyflow(chain, chain_target),
             delayed(_dask_chain(chain_n))),
            (f"fan-in tree of {tree_n}", tree_n, lazyflow(tree, tree_target),
             delayed(_dask_fan_in(tree_n))),
            (f"{chain_n} independent targets", chain_n, lazyflow(wide, wide_targets),
             delayed(independent)),
        ]
        return [(label, n, _median_rounds({OURS: ours, THEIRS: theirs}, rounds))
                for label, n, ours, theirs in shapes]


def cluster_overhead() -> None:
    """Print :func:`cluster_figures`."""
    for label, n, got in cluster_figures(ROUNDS):
        _report(f"LocalCluster: {label}", got, THEIRS, per=n)


def worker_startup() -> None:
    cold, warm = [], []
    for _ in range(ROUNDS):
        with ProcessExecutor(1) as pool:
            t0 = time.perf_counter()
            pool.submit(Task("noop", int, {})).result()
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for _ in range(100):
                pool.submit(Task("noop", int, {})).result()
            warm.append((time.perf_counter() - t0) / 100)
    print(f"{'process worker':<36} cold start + first task {statistics.median(cold) * 1e3:7.1f} ms"
          f" | warm round trip {statistics.median(warm) * 1e6:7.1f} µs")


def _report(label: str, got: dict[str, float], baseline: str, per: int = 0) -> None:
    base = got[baseline]
    parts = []
    for name, seconds in got.items():
        unit = f"{seconds / per * 1e6:7.1f} µs/node" if per else f"{seconds:6.2f} s"
        parts.append(f"{name} {unit} ({base / seconds:4.2f}x vs {baseline})")
    print(f"{label:<36} " + " | ".join(parts))


def main() -> None:
    print(f"python {sys.version.split()[0]}, dask {dask.__version__}; medians of {ROUNDS} "
          f"alternating rounds after one warm-up; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    sections = {"startup": worker_startup, "cpu": cpu_bound, "threads": scheduler_overhead,
                "cluster": cluster_overhead}
    only = sys.argv[sys.argv.index("--only") + 1].split(",") if "--only" in sys.argv else sections
    for name in only:
        sections[name]()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
