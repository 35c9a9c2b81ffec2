"""A node returning a ``memoryview`` is served a ``memoryview``, from disk and from a worker.

cloudpickle pickles a view as its ``bytes``: a disk hit, or a value back from a worker
process, was ``bytes`` — another type and digest than the node computes
(``cache/pickler.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

import lazyflow as lf
from lazyflow.executors.processes import ProcessExecutor


def _grid() -> memoryview:
    return memoryview(bytearray(range(6))).cast("B", (2, 3))


def test_a_memoryview_comes_back_from_the_disk_tier_as_the_view_it_was(tmp_path):
    flow = lf.Flow("views", cache=lf.Cache(memory=None, disk=str(tmp_path / "cache")))
    flow.node(_grid, name="grid")
    first, hit = flow.get("grid"), flow.get("grid")
    assert flow.last_run.nodes["grid"].status == "cached"
    assert (type(hit), hit.shape, hit.readonly, hit.tolist()) == (
        memoryview, (2, 3), False, first.tolist())
    assert lf.hash_value(hit) == lf.hash_value(_grid())


def test_a_memoryview_comes_back_from_a_worker_process_as_a_view(tmp_path):
    flow = lf.Flow("views", cache=lf.Cache(memory="1GB", disk=None))
    flow.node(lambda: memoryview(b"abcd").cast("H"), name="pairs")
    with ProcessExecutor(1) as pool:
        value = flow.get("pairs", executor=pool)
    assert (type(value), value.format, value.readonly) == (memoryview, "H", True)


def test_a_view_of_a_format_that_cannot_be_rebuilt_is_not_stored_and_says_so(tmp_path):
    flow = lf.Flow("views", cache=lf.Cache(memory=None, disk=str(tmp_path / "cache")))
    flow.node(lambda: memoryview(np.zeros(2, dtype=[("a", "i4")])), name="records")
    with pytest.warns(lf.CacheWarning, match=r"memoryview of format .* cannot be stored"):
        assert type(flow.get("records")) is memoryview
