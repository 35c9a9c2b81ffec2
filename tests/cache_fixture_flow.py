"""The flow the committed cache fixtures (``tests/fixtures/cache-v*/`` and ``remote-v*/``)
were written with (``fixtures/make_cache_fixture.py``, ``make_remote_fixture.py``) and are
read back with (``test_cache_format.py``, ``test_cache_remote_layout.py``).

Change nothing here: a fixture's keys cover this code, so an edit would make the flow
miss the committed entries of the current key schema. A new fixture (a new key schema,
encoding or layout) is written with this same flow; one that needs a different flow gets
a new module beside this one. The functions name no package (not even numpy or lazyflow,
whose versions would enter their keys): only builtins and their inputs.
"""

from __future__ import annotations

from typing import Any

import lazyflow as lf

FLOW = "fixture"
TARGETS = ("total", "scaled", "square", "pick")


def inputs() -> dict[str, Any]:
    """The request the fixture answers (a fresh numpy array each call)."""
    import numpy as np

    return {"n": 6, "data": np.linspace(0.0, 1.0, 200), "items": [1, 2, 3], "flag": True}


def raw(n):
    """A list of squares: a small value, stored inline in the disk index."""
    return [i * i for i in range(n)]


def total(raw):
    """An int from an upstream value."""
    return sum(raw)


def scaled(data, factor=2.0):
    """A numpy array (from a flow input that is one): a value of two frames, in a file."""
    return data * factor


def square(items):
    """A ``map=`` node: one element entry per item."""
    return items * items


def pick(flag, raw, total):
    """A lazy node (``total`` is lazy): a lazy-trace record."""
    return total() if flag else len(raw)


def build(cache: lf.Cache) -> lf.Flow:
    """The fixture's flow over ``cache``."""
    flow = lf.Flow(FLOW, cache=cache)
    flow.node(raw)
    flow.node(total)
    flow.node(scaled)
    flow.node(map="items")(square)
    flow.node(lazy=("total",))(pick)
    return flow
