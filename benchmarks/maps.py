"""Map bookkeeping at scale (issue 12, target 3), side by side with plain diskcache in one run.

**Target** (``--section target``): a map node over a flow input of 20,000 ints whose
element function is trivial (``xs * 2``), so what is timed is lazyflow's bookkeeping:

* *first run*: a fresh cache, every element computed and stored; against 20,000 plain
  ``diskcache.Cache.set`` calls of the same values (a fresh folder per repetition);
* *one appended*: the same list plus one element, after the first run; against 20,000
  plain ``diskcache.Cache.get`` calls.

Target: first run <= 0.5x the sets, one appended <= 0.1x the gets, on the disk tier
(``lf.Cache(memory=None, disk=...)``). The default configuration (memory plus disk) is
shown beside it. Every lazyflow request ends with ``lazyflow.history.flush()``, so the
run history's writes are counted. Medians over ``--reps`` fresh folders.

**A million elements** (``--section million``): one subprocess per tier (memory alone,
disk alone), each timing the first run, a warm request (the same list again), one
element appended, then one of those changed, and reporting its peak resident memory
(``ru_maxrss``) beside the peak before the first request (interpreter, imports and the
three input lists of a million ints).

Run: ``python benchmarks/maps.py`` (``--reps N``, ``--section target|million|all``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import diskcache

import lazyflow as lf
from lazyflow.history import flush

N = 20_000
MILLION = 1_000_000
FIRST_RATIO, APPEND_RATIO = 0.5, 0.1  # the targets


def _folder() -> str:
    return tempfile.mkdtemp(prefix="bench-maps-")


def _values(n: int) -> list[int]:
    return [x * 2 for x in range(n)]


def plain_sets(n: int) -> tuple[float, float]:
    """Seconds for ``n`` plain diskcache sets into a fresh folder, then ``n`` gets."""
    folder = _folder()
    try:
        with diskcache.Cache(folder) as cache:
            keys = [f"{i:032x}" for i in range(n)]  # as long as lazyflow's keys
            values = _values(n)
            t0 = time.perf_counter()
            for key, value in zip(keys, values, strict=True):
                cache.set(key, value)
            sets = time.perf_counter() - t0
            t0 = time.perf_counter()
            for key in keys:
                cache.get(key)
            gets = time.perf_counter() - t0
        return sets, gets
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Calls(list):  # type: ignore[type-arg]
    """Counts element calls; hashes to a constant, so counting never changes the node's key."""


lf.register_hasher(Calls, lambda calls: "calls")


def _flow(cache: lf.Cache, calls: list[int]) -> lf.Flow:
    flow = lf.Flow("bench-maps", cache=cache)

    @flow.node(map="xs")
    def doubled(xs: list) -> int:
        calls[0] += 1
        return xs * 2

    return flow


def _timed(request: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    request()
    flush()  # the run history's writes belong to the request
    return time.perf_counter() - t0


def lazyflow_map(n: int, memory: bool) -> tuple[float, float, int]:
    """Seconds of a first run over ``n`` elements and of a request with one appended, and
    the calls the appended request made (1 if only the new element was computed)."""
    folder = _folder()
    try:
        calls = Calls([0])
        cache = lf.Cache(memory="2GB" if memory else None, disk=folder)
        flow = _flow(cache, calls)
        items = list(range(n))
        first = _timed(lambda: flow.get("doubled", xs=items))
        grown = [*items, n]
        calls[0] = 0
        appended = _timed(lambda: flow.get("doubled", xs=grown))
        return first, appended, calls[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def target(reps: int, n: int) -> None:
    """Print the target table: first run and one appended against plain sets and gets."""
    sets, gets, disk_first, disk_append, both_first, both_append = ([] for _ in range(6))
    append_calls = set()
    for _ in range(reps):  # interleaved, so drift hits every column alike
        s, g = plain_sets(n)
        sets.append(s)
        gets.append(g)
        f, a, c = lazyflow_map(n, memory=False)
        disk_first.append(f)
        disk_append.append(a)
        append_calls.add(c)
        f, a, c = lazyflow_map(n, memory=True)
        both_first.append(f)
        both_append.append(a)
        append_calls.add(c)
    med = {name: statistics.median(v) * 1e3 for name, v in
           (("sets", sets), ("gets", gets), ("disk_first", disk_first),
            ("disk_append", disk_append), ("both_first", both_first),
            ("both_append", both_append))}
    print(f"issue 12 target 3: map over {n:,} ints, median of {reps} (ms); "
          f"calls when one is appended: {sorted(append_calls)}")
    print("| case | plain diskcache | lazyflow disk | ratio | target | met? "
          "| lazyflow memory+disk | ratio |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for label, plain, disk, both, limit in (
            (f"first run ({n:,} sets)", med["sets"], med["disk_first"], med["both_first"],
             FIRST_RATIO),
            (f"one appended ({n:,} gets)", med["gets"], med["disk_append"],
             med["both_append"], APPEND_RATIO)):
        ratio = disk / plain
        print(f"| {label} | {plain:,.1f} | {disk:,.1f} | {ratio:.3f} | <= {limit} | "
              f"{'yes' if ratio <= limit else '**no**'} | {both:,.1f} | {both / plain:.3f} |")


# --------------------------------------------------------------------------- a million


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def million_child(n: int, tier: str) -> dict[str, Any]:
    """In a fresh process: the four requests over ``n`` elements on one tier."""
    folder = _folder()
    try:
        items = list(range(n))
        grown = [*items, n]
        changed = grown.copy()
        changed[n // 2] = -1
        calls = Calls([0])
        cache = lf.Cache(memory="8GB", disk=None) if tier == "memory" else \
            lf.Cache(memory=None, disk=folder)
        flow = _flow(cache, calls)
        out: dict[str, Any] = {"tier": tier, "n": n, "before_mb": _peak_mb()}
        for phase, xs in (("first", items), ("warm", items), ("one appended", grown),
                          ("one changed", changed)):  # each one element from the last
            calls[0] = 0
            seconds = _timed(lambda xs=xs: flow.get("doubled", xs=xs))
            out[phase] = {"s": seconds, "calls": calls[0], "peak_mb": _peak_mb()}
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def million(n: int) -> None:
    """Print the million-element table, one subprocess per tier."""
    print(f"\nmap over {n:,} ints, one process per tier (seconds; calls; peak RSS MB)")
    print("| tier | first run | warm | one appended | one changed | peak RSS "
          "| RSS before the first request |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tier in ("memory", "disk"):
        out = subprocess.run([sys.executable, __file__, "--child", tier, "--n", str(n)],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": "0"})
        row = json.loads(out.stdout.strip().splitlines()[-1])
        cells = [f"{row[p]['s']:.3f} s ({row[p]['calls']:,} call"
                 f"{'' if row[p]['calls'] == 1 else 's'})"
                 for p in ("first", "warm", "one appended", "one changed")]
        print(f"| {tier} | {' | '.join(cells)} | {row['one changed']['peak_mb']:,.0f} MB | "
              f"{row['before_mb']:,.0f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--section", choices=("target", "million", "all"), default="all")
    parser.add_argument("--child", choices=("memory", "disk"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(million_child(args.n or MILLION, args.child)))
        return
    if args.section in ("target", "all"):
        target(args.reps, args.n or N)
    if args.section in ("million", "all"):
        million(args.n if args.section == "million" and args.n else MILLION)


if __name__ == "__main__":
    main()
