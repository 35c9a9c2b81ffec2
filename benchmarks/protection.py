"""What protecting cached values costs: the memory tier's snapshot (put) and handout (get),
per type, against the ways it could have been done, side by side in one run.

The memory tier hands out copies or read-only views so that nobody can change a cached
value in place (lazyflow/cache/snapshot.py). For each kind of value this measures:

* ``put``: the memory tier keeping it (its snapshot: a copy, a pickle stream, or nothing);
* ``get``: a memory hit (the handout: the value itself, a read-only view, a copy-on-write
  copy, or an unpickled copy);
* ``shared``: a memory hit without protection (a dict lookup; what lazyflow did before);
* ``deepcopy``: ``copy.deepcopy`` on every hit;
* ``digest``: ``lf.hash_value`` on every hit (a digest check of the kept value);
* ``disk get``: a hit on the disk tier (read, verify, unpickle), what the memory tier saves.

Medians of interleaved repetitions, in milliseconds (timings drift up to 2x between runs
on these machines: compare within a run).

    python benchmarks/protection.py            # about a minute
    python benchmarks/protection.py --reps 7
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import lazyflow as lf  # noqa: E402
from lazyflow.cache.disk import DiskTier  # noqa: E402
from lazyflow.cache.memory import MemoryTier  # noqa: E402


class Model:
    """A user class holding an array, as a fitted model does."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights
        self.history = [1, 2, 3]


def values() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n = 2_000_000
    return {
        "int": 12345,
        "tuple of 1,000 ints": tuple(range(1000)),
        "dict of 10 items": {f"k{i}": [i, float(i)] for i in range(10)},
        "80 MB array": rng.random(10_000_000),
        "72 MB DataFrame": pd.DataFrame({"a": rng.random(n), "b": rng.integers(0, 9, n),
                                         "c": rng.random(n),
                                         "s": [f"x{i % 1000}" for i in range(n)]}),
        "list of 1M floats": [float(i) for i in range(1_000_000)],
        "dict of 100k lists": {f"k{i}": [i, float(i), str(i), [i]] for i in range(100_000)},
        "object with 80 MB array": Model(rng.random(10_000_000)),
    }


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(value: Any, disk: DiskTier, reps: int) -> dict[str, float]:
    tier = MemoryTier(10**10)
    disk.put("k", value, {"digest": "d"})
    shared = {"k": value}
    ways: dict[str, Callable[[], object]] = {
        "put": lambda: tier.put("k", value, {"digest": "d"}),
        "get": lambda: tier.get("k"),
        "shared": lambda: shared["k"],
        "deepcopy": lambda: copy.deepcopy(value),
        "digest": lambda: lf.hash_value(value),
        "disk get": lambda: disk.get("k"),
    }
    tier.put("k", value, {"digest": "d"})
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(reps):  # interleaved: drift on the machine hits every way alike
        for name, way in ways.items():
            seconds[name].append(timed(way))
    return {name: statistics.median(s) * 1e3 for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of every measurement")
    args = parser.parse_args()
    columns = ["put", "get", "shared", "deepcopy", "digest", "disk get"]
    print("| value | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    with tempfile.TemporaryDirectory() as directory:
        disk = DiskTier(directory, size_limit=10**10)
        for name, value in values().items():
            row = measure(value, disk, args.reps)
            print(f"| {name} | " + " | ".join(f"{row[c]:.4g}" for c in columns) + " |",
                  flush=True)
        disk.close()


if __name__ == "__main__":
    main()
