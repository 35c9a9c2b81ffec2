"""How long the DAG layout (and its SVG) takes for 1 to 200 nodes; the target is < 1 s at 200.

Three shapes per size: a chain, a layered random DAG (edges to the previous
20 nodes) and an unconstrained random DAG (long edges: the worst case for
dummy points and crossing sweeps), the last also with three sub-flow group
boxes of n/6 nodes each (bands and a second, constrained crossing pass).
Medians of 9 runs.

    python benchmarks/layout.py
"""

from __future__ import annotations

import random
import statistics
import time

from lazyflow.render.layout import layout
from lazyflow.render.svg import render_svg

RUNS = 9


def shapes(n: int) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(n)
    names = [f"n{i}" for i in range(n)]
    return {
        "chain": [(names[i - 1], names[i]) for i in range(1, n)],
        "layered random": [(names[rng.randrange(max(0, i - 20), i)], names[i])
                           for i in range(1, n) for _ in range(2)],
        "random (long edges)": [(names[rng.randrange(i)], names[i])
                                for i in range(1, n) for _ in range(2)],
    }


def main() -> None:
    print(f"{'nodes':>5}  {'shape':<26} {'layout':>10} {'layout+svg':>11}")
    for n in (1, 10, 50, 200):
        names = [f"n{i}" for i in range(n)]
        boxes = {f"g{k}": names[k * n // 3:k * n // 3 + n // 6] for k in range(3)}
        cases = [(shape, edges, None) for shape, edges in shapes(n).items()]
        cases.append(("random, 3 sub-flow boxes", shapes(n)["random (long edges)"], boxes))
        for shape, edges, groups in cases:
            lay_t, all_t = [], []
            for _ in range(RUNS):
                t0 = time.perf_counter()
                lay = layout(names, edges, groups)
                t1 = time.perf_counter()
                render_svg(lay, {})
                t2 = time.perf_counter()
                lay_t.append(t1 - t0)
                all_t.append(t2 - t0)
            print(f"{n:>5}  {shape:<26} {statistics.median(lay_t) * 1e3:8.1f}ms "
                  f"{statistics.median(all_t) * 1e3:9.1f}ms")


if __name__ == "__main__":
    main()
