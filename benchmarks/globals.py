"""Warm requests of a node that reads a large module-level value, against the floor.

A node that reads a mutable global (an array, a dict) must see the global change
in place, so a warm request re-hashes it: this is the price of never serving a
stale value. The benchmark measures, in one process, medians over repetitions:

* a warm ``flow.get`` of a node reading a small global (the baseline),
* a warm ``flow.get`` of a node reading a float64 array global of ``--mb`` MB,
* raw ``xxhash.xxh3_128_digest`` over that array's buffer (the floor for re-hashing),
* a warm ``flow.get`` of a node bound to an instance holding that array
  (``flow.node(model.predict)``: the instance is re-checked the same way).

It prints each figure and the ratio of the large-global request to the raw
hash (close to 1 means the re-check costs what reading the bytes costs, and
nothing more). Run: ``python benchmarks/globals.py [--mb 200] [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import xxhash

import lazyflow as lf


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


class Model:
    """A bound-method node's instance, holding the large array."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def predict(self) -> float:
        return float(self.weights[:10].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    big = np.random.default_rng(0).random(args.mb * 2**20 // 8)
    namespace: dict[str, object] = {"__name__": "bench_globals", "BIG": big, "SMALL": 3}
    exec("def small():\n    return SMALL + 1\n"
         "def large():\n    return float(BIG[:10].sum())\n", namespace)
    flow = lf.Flow("globals", cache=lf.Cache(disk=None))
    flow.node(namespace["small"])
    flow.node(namespace["large"])
    flow.node(Model(big).predict, name="bound")
    for name in ("small", "large", "bound"):
        flow.get(name)  # cold: computed and stored
    rows = {
        "warm get, small global": _median_ms(lambda: flow.get("small"), args.repeat),
        f"warm get, {args.mb} MB array global": _median_ms(lambda: flow.get("large"),
                                                            args.repeat),
        f"warm get, bound method holding {args.mb} MB": _median_ms(lambda: flow.get("bound"),
                                                                   args.repeat),
        f"raw xxh3-128 over {args.mb} MB": _median_ms(lambda: xxhash.xxh3_128_digest(big),
                                                      args.repeat),
    }
    width = max(map(len, rows))
    for label, ms in rows.items():
        print(f"{label:<{width}}  {ms:9.3f} ms")
    floor = rows[f"raw xxh3-128 over {args.mb} MB"]
    print(f"large-global warm get / raw hash: "
          f"{rows[f'warm get, {args.mb} MB array global'] / floor:.2f}")
    print(f"bound-method warm get / raw hash: "
          f"{rows[f'warm get, bound method holding {args.mb} MB'] / floor:.2f}")


if __name__ == "__main__":
    main()
