"""Parallel execution, side by side with dask in one process run.

1. CPU-bound: 8 independent pure-Python nodes, lazyflow "sync" vs "processes"
   (2 workers) vs dask's multiprocessing scheduler (2 workers).
2. Scheduler overhead: 10,000 trivial nodes (a binary tree, every node
   requested through its leaves), lazyflow "threads" vs dask's threaded
   scheduler on the same graph.
3. Distributed overhead: 500 trivial independent nodes on one LocalCluster
   (2 worker processes), lazyflow executor=client vs dask.delayed.
Plus the start-up of a process worker (cold) against a warm task round trip.

Rounds alternate between contenders so drift hits them alike; each figure is
a median. Run: ``python benchmarks/parallel.py`` (``--quick`` for fewer rounds).
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


def cluster_overhead() -> None:
    n = 500
    flow = lf.Flow("remote", cache=lf.Cache(disk=None))
    for i in range(n):
        flow.node(name=f"r{i}", cache=False)(lambda i=i: i)
    names = [f"r{i}" for i in range(n)]
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1,
                                  host="127.0.0.1", dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        tasks = [dask.delayed(lambda i: i)(i, dask_key_name=f"d{i}") for i in range(n)]
        got = _median_rounds({
            "lazyflow executor=client": lambda: flow.get(names, executor=client),
            "dask.delayed on the client": lambda: dask.compute(*tasks, scheduler=client),
        }, ROUNDS)
    _report(f"{n} trivial nodes on a LocalCluster", got, "dask.delayed on the client", per=n)


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
    worker_startup()
    cpu_bound()
    scheduler_overhead()
    cluster_overhead()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
