"""Hashing throughput of ``lf.hash_value`` against raw xxh3, joblib.hash and dask's tokenize.

Side by side in one process, on contiguous float64 arrays of 1 MB, 10 MB,
100 MB and 1 GB, and on a ~100 MB mixed DataFrame (float and int columns and a
column of short strings, pandas' default string dtype). Throughput is GB/s of
the value's memory (``nbytes`` for arrays; ``memory_usage(deep=True)`` for the
frame, which counts each string object, as a user's RAM does). Each figure
is the median of several rounds (51 up to 10 MB, where one call is short and
noisy; 9 at 100 MB; 5 at 1 GB) after one untimed round, the hashers taking
turns within a round;
ratios are against raw xxh3-128 over the same buffer (arrays) or against
lazyflow (the frame).

A third section hashes the other libraries lazyflow knows (pyarrow, polars,
xarray, scipy.sparse, torch), each holding a ~100 MB float64 payload, against
raw xxh3-128 over the same buffers (for a sparse matrix: data, indices and
indptr), 9 rounds each.

Run: ``python benchmarks/hashing.py`` (``--max-mb 100`` to skip the 1 GB array,
``--sections types`` to run one section, ``--markdown FILE`` to also write the
tables).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import dask
import joblib
import numpy as np
import pandas as pd
import xxhash
from dask.base import tokenize

import lazyflow as lf


def rates(hashers: dict[str, Callable[[], Any]], nbytes: int, runs: int) -> dict[str, float]:
    """Median GB/s of each hasher over ``runs`` rounds (after one untimed round).

    The hashers take turns within each round, so a slow spell of the machine
    falls on all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in hashers}
    for round_ in range(runs + 1):
        for name, fn in hashers.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            if round_:
                times[name].append(time.perf_counter() - t0)
    return {name: nbytes / statistics.median(t) / 1e9 for name, t in times.items()}


def raw_xxh3(arr: np.ndarray) -> str:
    """The floor: xxh3-128 straight over the array's buffer."""
    return xxhash.xxh3_128_hexdigest(memoryview(arr).cast("B"))


def mixed_frame(target_bytes: int) -> pd.DataFrame:
    """Two float, two int and one short-string column, about ``target_bytes`` deep."""
    rng = np.random.default_rng(0)
    words = np.array([f"{w}-{i}" for i, w in enumerate(["alpha", "beta", "gamma", "delta"] * 250)],
                     dtype=object)
    per_row = 4 * 8 + 60  # numbers, plus a short str object and its pointer
    rows = target_bytes // per_row
    return pd.DataFrame({
        "x": rng.random(rows), "y": rng.normal(size=rows),
        "id": rng.integers(0, 2**40, rows), "n": rng.integers(0, 100, rows),
        "label": pd.array(words[rng.integers(0, len(words), rows)], dtype="str"),
    })


def array_rates(arr: np.ndarray, runs: int) -> dict[str, float]:
    """GB/s of each hasher on one array (joblib, ~30x slower, on fewer rounds)."""
    results = rates({"raw": lambda: raw_xxh3(arr), "lazyflow": lambda: lf.hash_value(arr),
                     "dask": lambda: tokenize(arr)}, arr.nbytes, runs)
    results.update(rates({"joblib": lambda: joblib.hash(arr)}, arr.nbytes, max(1, runs // 3)))
    return results


def array_table(sizes_mb: list[int]) -> str:
    rows = ["| array (float64) | raw xxh3-128 | lazyflow hash_value | joblib.hash | dask tokenize "
            "| hash_value / raw |",
            "|---|---:|---:|---:|---:|---:|"]
    for mb in sizes_mb:
        results = array_rates(np.random.default_rng(mb).random(mb * 10**6 // 8),
                              runs=51 if mb <= 10 else 9 if mb <= 100 else 5)
        rows.append(f"| {mb:,} MB | {results['raw']:.2f} GB/s | {results['lazyflow']:.2f} GB/s | "
                    f"{results['joblib']:.2f} GB/s | {results['dask']:.2f} GB/s | "
                    f"{results['lazyflow'] / results['raw']:.0%} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def frame_table(target_mb: int) -> str:
    df = mixed_frame(target_mb * 10**6)
    nbytes = int(df.memory_usage(deep=True).sum())
    results = rates({"lazyflow": lambda: lf.hash_value(df), "dask": lambda: tokenize(df)},
                    nbytes, 9)
    results.update(rates({"joblib": lambda: joblib.hash(df)}, nbytes, 1))
    header = (f"mixed DataFrame: {len(df):,} rows x {df.shape[1]} columns "
              f"({', '.join(f'{c}:{t}' for c, t in df.dtypes.astype(str).items())}), "
              f"{nbytes / 1e6:,.0f} MB deep")
    rows = [header, "", "| hasher | throughput | lazyflow / hasher |", "|---|---:|---:|"]
    for name, gbs in results.items():
        ratio = "" if name == "lazyflow" else f"{results['lazyflow'] / gbs:,.1f}x"
        rows.append(f"| {name} | {gbs:.2f} GB/s | {ratio} |")
    print("\n".join(rows), flush=True)
    return "\n".join(rows)


def library_versions() -> str:
    import polars as pl
    import pyarrow as pa
    import scipy
    import torch
    import xarray as xr

    line = (f"pyarrow {pa.__version__}, polars {pl.__version__}, xarray {xr.__version__}, "
            f"scipy {scipy.__version__}, torch {torch.__version__}")
    print(line, flush=True)
    return line


def raw_xxh3_buffers(buffers: list[np.ndarray]) -> list[str]:
    """The floor for a value made of several buffers: xxh3-128 over each."""
    return [raw_xxh3(b) for b in buffers]


Payload = tuple[Callable[[], Any], list[np.ndarray]]
"""A value maker (the same value each call, or a fresh one) and the float64 buffers it holds."""


def type_payloads(mb: int) -> Iterator[tuple[str, Callable[[], Payload]]]:
    """(label, build) per type, built one at a time so one ~``mb`` MB payload lives at once."""
    import polars as pl
    import pyarrow as pa
    import scipy.sparse as sp
    import torch
    import xarray as xr

    n = mb * 10**6 // 8

    def floats(seed: int = 0, size: int = n) -> np.ndarray:
        return np.random.default_rng(seed).random(size)

    def same(value: Any, buffers: list[np.ndarray]) -> Payload:
        return (lambda: value), buffers

    def columns(make: Callable[[dict[str, np.ndarray]], Any]) -> Callable[[], Payload]:
        def build() -> Payload:
            xs = {f"c{i}": floats(i, n // 4) for i in range(4)}
            return same(make(xs), list(xs.values()))
        return build

    def csr(fresh: bool) -> Callable[[], Payload]:
        def build() -> Payload:
            rows, width = 10_000, 10**6
            data = floats()
            indptr = np.linspace(0, n, rows + 1).astype(np.int32)
            cols = np.sort(np.random.default_rng(1).integers(0, width, (rows, n // rows),
                                                             dtype=np.int32), axis=1).ravel()

            def make() -> Any:  # on the same buffers: cheap, and the flags are not known yet
                return sp.csr_array((data, cols, indptr), shape=(rows, width))

            return (make, [data, cols, indptr]) if fresh else same(make(), [data, cols, indptr])
        return build

    def one(make: Callable[[np.ndarray], Any]) -> Callable[[], Payload]:
        def build() -> Payload:
            values = floats()
            return same(make(values), [values])
        return build

    def chunked() -> Payload:
        chunks = [floats(i, n // 8) for i in range(8)]
        return same(pa.chunked_array([pa.array(c) for c in chunks]), chunks)

    yield from [
        ("pyarrow Array", one(pa.array)),
        ("pyarrow ChunkedArray (8 chunks)", chunked),
        ("pyarrow Table (4 columns)", columns(pa.table)),
        ("pyarrow RecordBatch (4 columns)", columns(pa.record_batch)),
        ("polars Series", one(lambda v: pl.Series("x", v))),
        ("polars DataFrame (4 columns)", columns(pl.DataFrame)),
        ("xarray DataArray (2-D, 1 coordinate)",
         one(lambda v: xr.DataArray(v.reshape(1000, -1), dims=("t", "s"),
                                    coords={"t": np.arange(1000)}, name="v"))),
        ("xarray Dataset (4 variables)",
         columns(lambda xs: xr.Dataset({k: ("t", c) for k, c in xs.items()}))),
        ("scipy.sparse csr_array (data + int32 indices)", csr(fresh=False)),
        ("scipy.sparse csr_array, format flags not yet known", csr(fresh=True)),
        ("torch Tensor (CPU)", one(lambda v: torch.from_numpy(v).reshape(1000, -1))),
    ]


def type_rates(make: Callable[[], Any], buffers: list[np.ndarray], runs: int) -> dict[str, float]:
    """GB/s of hash_value on the value and of raw xxh3 over its buffers (values made untimed)."""
    values = [make() for _ in range(runs + 1)]
    return rates({"raw": lambda: raw_xxh3_buffers(buffers),
                  "lazyflow": lambda: lf.hash_value(values.pop())},
                 sum(b.nbytes for b in buffers), runs)


def types_table(mb: int) -> str:
    rows = [f"| value (~{mb} MB float64 payload) | raw xxh3-128 | lazyflow hash_value "
            "| hash_value / raw |", "|---|---:|---:|---:|"]
    for label, build in type_payloads(mb):
        results = type_rates(*build(), runs=9)
        rows.append(f"| {label} | {results['raw']:.2f} GB/s | {results['lazyflow']:.2f} GB/s "
                    f"| {results['lazyflow'] / results['raw']:.0%} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-mb", type=int, default=1000)
    parser.add_argument("--frame-mb", type=int, default=100)
    parser.add_argument("--types-mb", type=int, default=100)
    parser.add_argument("--sections", default="arrays,frame,types",
                        help="comma-separated: arrays, frame, types")
    parser.add_argument("--markdown", help="also write the result tables to this file")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, pandas {pd.__version__}, "
          f"xxhash {xxhash.VERSION}, joblib {joblib.__version__}, dask {dask.__version__}")
    sections = set(args.sections.split(","))
    tables = []
    if "arrays" in sections:
        tables.append(array_table([mb for mb in (1, 10, 100, 1000) if mb <= args.max_mb]))
    if "frame" in sections:
        tables.append(frame_table(args.frame_mb))
    if "types" in sections:
        tables.append(library_versions())
        tables.append(types_table(args.types_mb))
    report = "\n\n".join(tables)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
