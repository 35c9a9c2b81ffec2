"""Cold and warm per-node cost of two commits of lazyflow, in interleaved rounds.

Timings on these machines drift up to 1.8x between runs, so a change's cost is
measured against the commit before it side by side: each round runs one
subprocess per (commit, chain size), alternating commits, and the medians over
the rounds are compared. Each subprocess imports lazyflow from a git worktree
of its commit (``PYTHONPATH``), builds a chain of trivial nodes on a memory
cache, and times with the process's CPU clock:

* **cold**: the first request of the chain's last node (every node computed,
  stored and recorded; the run history flushed inside the request);
* **warm**: the median of five repeated requests (answered from the cache).

Run: ``python benchmarks/compare_commits.py --before a067d19 [--after HEAD]
[--sizes 1000,10000] [--rounds 9]``. Prints per size and phase the two medians
and their ratio (after / before: above 1 is slower).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_MEASURE = r"""
import gc, json, sys, time
sys.setrecursionlimit(100_000)
import lazyflow as lf
from lazyflow.history import flush
n = int(sys.argv[1])
namespace = {"__name__": "chain_module"}
exec("def n0(x):\n    return x\n" + "".join(
    f"def n{i}(n{i - 1}):\n    return n{i - 1} + 1\n" for i in range(1, n)), namespace)
flow = lf.Flow("chain", cache=lf.Cache(disk=None))
for i in range(n):
    flow.node(namespace[f"n{i}"])
gc.collect()
start = time.process_time()
flow.get(f"n{n - 1}", x=0)
flush()
cold = time.process_time() - start
warm = []
for _ in range(5):
    start = time.process_time()
    flow.get(f"n{n - 1}", x=0)
    flush()
    warm.append(time.process_time() - start)
print(json.dumps({"cold": cold / n * 1e6, "warm": sorted(warm)[2] / n * 1e6}))
"""


def _worktree(repo: Path, rev: str, folder: Path) -> Path:
    path = folder / rev.replace("/", "_")
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-f", str(path), rev],
                   check=True, capture_output=True)
    return path


def _measure(tree: Path, size: int, cache_dir: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree), "LAZYFLOW_CACHE_DIR": cache_dir}
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(size)], env=env, check=True,
                         capture_output=True, text=True, cwd=cache_dir)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    repo = Path(__file__).resolve().parent.parent
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        trees = {"before": _worktree(repo, args.before, folder),
                 "after": _worktree(repo, args.after, folder)}
        try:
            samples = {(which, size, phase): [] for which in trees for size in sizes
                       for phase in ("cold", "warm")}
            for _ in range(args.rounds):
                for size in sizes:
                    for which, tree in trees.items():
                        for phase, value in _measure(tree, size, scratch).items():
                            samples[(which, size, phase)].append(value)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force",
                                str(tree)], check=False, capture_output=True)
    print(f"before {args.before}, after {args.after}: {args.rounds} interleaved rounds, "
          "CPU µs per node, medians")
    print("| chain | phase | before | after | after / before |")
    print("|---:|---|---:|---:|---:|")
    for size in sizes:
        for phase in ("cold", "warm"):
            before = statistics.median(samples[("before", size, phase)])
            after = statistics.median(samples[("after", size, phase)])
            print(f"| {size:,} | {phase} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
