"""Small flows shared by several test modules."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np

import lazyflow as lf


def ran(flow: lf.Flow, targets: str | list[str], **inputs: object) -> lf.Run:
    """``flow.run`` then ``flow.cache.flush()``: the run's remote manifest, which a run
    leaves to be written in the background, has landed (as at exit)."""
    run = flow.run(targets, **inputs)
    flow.cache.flush()
    return run


def define_array_chain(flow: lf.Flow, calls: Counter[str]) -> lf.Flow:
    """``raw(n)`` -> a float64 array, ``total(raw)`` -> its sum; each counts its calls."""

    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return np.arange(n, dtype=np.float64)

    @flow.node
    def total(raw):
        calls["total"] += 1
        return float(raw.sum())

    return flow


def define_list_chain(flow: lf.Flow) -> lf.Flow:
    """``raw(n)`` -> ``list(range(n))``, ``total(raw)`` -> its sum: the team's chain of the
    remote-tier tests, which add their own third node."""

    @flow.node
    def raw(n: int):
        return list(range(n))

    @flow.node
    def total(raw):
        return sum(raw)

    return flow


def define_diamond(flow: lf.Flow, barrier: threading.Barrier | None = None) -> lf.Flow:
    """``source`` -> ``left``, ``right`` -> ``joined`` (9 for the default ``n=4``).

    With a ``barrier``, ``left`` and ``right`` pass only if they run at the same time.
    """

    @flow.node
    def source(n: int = 4):
        return list(range(n))

    @flow.node
    def left(source):
        if barrier is not None:
            barrier.wait(timeout=10)
        return sum(source)

    @flow.node
    def right(source):
        if barrier is not None:
            barrier.wait(timeout=10)
        return max(source)

    @flow.node
    def joined(left, right):
        return left + right

    return flow
