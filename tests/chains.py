"""Small flows shared by several test modules."""

from __future__ import annotations

from collections import Counter

import numpy as np

import lazyflow as lf


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
