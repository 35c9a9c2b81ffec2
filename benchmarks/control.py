"""Control-flow costs, side by side in one process: per-item map and file inputs.

* **map, one element changed**: a 1,000-element list, an element function that
  takes about 1 ms (``time.sleep(0.001)``); after a first full run, one element
  changes and the whole result is requested again. Compared: lazyflow
  ``@flow.node(map=...)`` (memory tier), joblib.Memory wrapping the element
  function in a loop (its disk cache in a temporary folder, as joblib has no
  memory cache), and plain calls (recompute everything: the floor without a
  cache). Every framework also reports how many element calls it made.
* **file input, warm request**: a node reading a 100 MB ``lf.File``, requested
  again with the file unchanged. Compared: lazyflow's mtime+size fast path
  (the file is not read) and the same request after the file is touched (new
  mtime, same bytes: the file is read and hashed again, nothing recomputes).

Medians over the repetitions, and ratios to lazyflow (above 1: lazyflow is
faster). Run: ``python benchmarks/control.py`` (``--reps N``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joblib

import lazyflow as lf

N_ELEMENTS = 1000
FILE_MB = 100
OLD_NS = 1_600_000_000 * 10**9


def _median_time(setup: Callable[[], Callable[[], int]], reps: int) -> tuple[float, int]:
    times, calls = [], 0
    for _ in range(reps):
        step = setup()
        t0 = time.perf_counter()
        calls = step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), calls


def _element(x: int) -> int:
    time.sleep(0.001)
    return x * 2


def map_lazyflow() -> Callable[[], int]:
    counter = {"calls": 0}
    flow = lf.Flow("bench-map", cache=lf.Cache(disk=None))

    @flow.node(map="xs")
    def doubled(xs: list) -> int:
        counter["calls"] += 1
        return _element(xs)

    items = list(range(N_ELEMENTS))
    flow.get("doubled", xs=items)
    changed = items.copy()
    changed[N_ELEMENTS // 2] = -1
    counter["calls"] = 0

    def step() -> int:
        flow.get("doubled", xs=changed)
        return counter["calls"]

    return step


def map_joblib() -> Callable[[], int]:
    folder = tempfile.mkdtemp(prefix="bench-joblib-")
    memory = joblib.Memory(folder, verbose=0)
    counter = {"calls": 0}

    def element(x: int) -> int:
        counter["calls"] += 1
        return _element(x)

    cached = memory.cache(element, ignore=[])
    items = list(range(N_ELEMENTS))
    [cached(x) for x in items]
    changed = items.copy()
    changed[N_ELEMENTS // 2] = -1
    counter["calls"] = 0

    def step() -> int:
        [cached(x) for x in changed]
        return counter["calls"]

    return step


def map_plain() -> Callable[[], int]:
    changed = list(range(N_ELEMENTS))
    changed[N_ELEMENTS // 2] = -1

    def step() -> int:
        [_element(x) for x in changed]
        return len(changed)

    return step


def _big_file() -> Path:
    path = Path(tempfile.mkdtemp(prefix="bench-file-")) / "data.bin"
    path.write_bytes(os.urandom(FILE_MB * 2**20))
    os.utime(path, ns=(OLD_NS, OLD_NS))  # outside the racy window: the fast path may apply
    return path


def file_request(touch: bool) -> Callable[[], Callable[[], int]]:
    def setup() -> Callable[[], int]:
        path = _big_file()
        flow = lf.Flow("bench-file", cache=lf.Cache(disk=None))

        @flow.node
        def size(data: lf.File) -> int:
            return data.path.stat().st_size

        flow.get("size", data=lf.File(path))

        def step() -> int:
            if touch:
                os.utime(path, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
            run = flow.run("size", data=lf.File(path))
            return int(run.nodes["size"].status != "cached")

        return step

    return setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    reps = parser.parse_args().reps

    print(f"map over {N_ELEMENTS} elements (~1 ms each), one element changed; "
          f"median of {reps}")
    results = {name: _median_time(setup, reps) for name, setup in
               (("lazyflow map=", map_lazyflow), ("joblib.Memory loop", map_joblib),
                ("plain (no cache)", map_plain))}
    base = results["lazyflow map="][0]
    print(f"{'framework':22} {'median':>10} {'calls':>6} {'ratio':>8}")
    for name, (seconds, calls) in results.items():
        print(f"{name:22} {seconds * 1e3:8.1f}ms {calls:6d} {seconds / base:8.2f}")

    print(f"\nwarm request on a {FILE_MB} MB lf.File input; median of {reps}")
    fast, recomputed = _median_time(file_request(touch=False), reps)
    touched, recomputed_touched = _median_time(file_request(touch=True), reps)
    print(f"{'case':34} {'median':>10} {'recomputed':>11} {'ratio':>8}")
    print(f"{'unchanged (mtime+size fast path)':34} {fast * 1e3:8.2f}ms {recomputed:11d} "
          f"{1.0:8.2f}")
    print(f"{'touched (re-read, same content)':34} {touched * 1e3:8.2f}ms "
          f"{recomputed_touched:11d} {touched / fast:8.2f}")


if __name__ == "__main__":
    main()
