"""Per-item map: each element computed once, results in order, failures name their index; the
manifest finds every earlier result by the element's id, chunk by chunk, and never a wrong one."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import lazyflow as lf
from lazyflow import keys
from lazyflow.cache.disk import DiskTier
from lazyflow.model.mapping import CHUNK, chunk_key


@pytest.fixture
def squares(flow, calls):
    @flow.node
    def items(n: int = 1000, changed: int = -1):
        return [i if i != changed else i + 1000 for i in range(n)]

    @flow.node(map="items")
    def squared(items):
        calls["squared"] += 1
        return items * items

    return flow


def test_the_function_is_applied_to_each_element_in_order(squares):
    assert squares.get("squared", n=5) == [0, 1, 4, 9, 16]


def test_changing_one_of_a_thousand_elements_makes_exactly_one_call(squares, calls):
    squares.get("squared")
    assert calls["squared"] == 1000
    result = squares.get("squared", changed=7)
    assert calls["squared"] == 1001
    assert result[7] == 1007**2 and len(result) == 1000


def test_an_unchanged_request_is_a_hit_without_touching_elements(squares, calls):
    squares.get("squared")
    run = squares.run("squared")
    assert run.nodes["squared"].status == "cached" and calls["squared"] == 1000


def test_the_record_says_how_many_elements_were_computed(squares):
    squares.get("squared", n=10)
    run = squares.run("squared", n=10, changed=3)
    assert run.nodes["squared"].reason.endswith("1 of 10 elements to compute")


def test_chained_maps_stay_element_wise(squares, calls):
    @squares.node(map="squared")
    def plus_one(squared):
        calls["plus_one"] += 1
        return squared + 1

    squares.get("plus_one", n=100)
    assert squares.get("plus_one", n=100, changed=5)[5] == 1005**2 + 1
    assert calls["squared"] == 101 and calls["plus_one"] == 101


def test_a_map_over_a_flow_input_works(flow):
    @flow.node(map="words")
    def upper(words: list):
        return words.upper()

    assert flow.get("upper", words=["a", "b"]) == ["A", "B"]


def test_other_inputs_are_passed_whole_to_every_element(flow):
    @flow.node(map="xs")
    def scaled(xs: list, factor: int):
        return xs * factor

    assert flow.get("scaled", xs=[1, 2], factor=3) == [3, 6]


def test_changing_a_shared_input_recomputes_every_element(flow, calls):
    @flow.node(map="xs")
    def scaled(xs: list, factor: int):
        calls["scaled"] += 1
        return xs * factor

    flow.get("scaled", xs=[1, 2], factor=3)
    flow.get("scaled", xs=[1, 2], factor=4)
    assert calls["scaled"] == 4


def test_a_failing_element_reports_its_index_and_the_others_stay_cached(flow, calls):
    @flow.node(map="xs")
    def inverse(xs: list, bad: int = 0):
        calls["inverse"] += 1
        return 1 / (xs - bad)

    with pytest.raises(ZeroDivisionError) as info:
        flow.get("inverse", xs=[1, 2, 3, 4], bad=3)
    assert any("element 2 of 4" in note for note in info.value.__notes__)
    assert calls["inverse"] == 4
    flow.get("inverse", xs=[1, 2, 5, 6], bad=3)
    assert calls["inverse"] == 6  # only 5 and 6: elements 1 and 2 were cached


def test_an_empty_list_maps_to_an_empty_list(flow):
    @flow.node(map="xs")
    def double(xs: list):
        return xs * 2

    assert flow.get("double", xs=[]) == []


def test_mapping_over_something_that_is_not_a_list_names_the_node(flow):
    @flow.node(map="xs")
    def double(xs):
        return xs * 2

    with pytest.raises(lf.MapError, match="node 'double' maps over 'xs'"):
        flow.get("double", xs=3)


def test_map_must_name_a_parameter(flow):
    with pytest.raises(lf.DefinitionError, match="map= names the parameter"):
        flow.node(lambda xs: xs, name="f", map="ys")


def test_elements_run_in_parallel_under_the_threads_executor(flow):
    barrier = threading.Barrier(2, timeout=30)

    @flow.node(map="xs")
    def meet(xs: list, gate: threading.Barrier):
        barrier.wait()  # passes only if both elements are running at the same time
        return xs

    assert flow.get("meet", xs=[1, 2], gate=barrier, executor="threads", max_workers=2) == [1, 2]


def test_elements_retry_on_their_own(flow, calls):
    @flow.node(map="xs", retries=1, retry_delay=0)
    def flaky(xs: list):
        calls[xs] += 1
        if xs == 2 and calls[xs] == 1:
            raise OSError("transient")
        return xs

    assert flow.get("flaky", xs=[1, 2, 3]) == [1, 2, 3]
    assert calls == {1: 1, 2: 2, 3: 1}


def test_a_map_node_cannot_take_lazy_inputs(flow):
    def f(xs, other: lf.Lazy[int]):
        return xs

    with pytest.raises(lf.DefinitionError, match="cannot take lazy inputs"):
        flow.node(f, map="xs")


def test_a_failing_element_is_reported_the_same_under_the_threads_executor(flow):
    @flow.node(map="xs")
    def check(xs: list):
        if xs == 3:
            raise ValueError("three")
        return xs

    with pytest.raises(ValueError, match="three") as info:
        flow.get("check", xs=[1, 2, 3], executor="threads")
    assert any("element 2 of 3" in note for note in info.value.__notes__)
    assert flow.last_run.nodes["check"].status == "failed"


def test_map_elements_work_when_tasks_cross_a_process_boundary(squares, pickling_executor):
    squares.get("squared", n=10)
    assert squares.get("squared", n=10, changed=3, executor=pickling_executor)[3] == 1003**2


def test_a_map_over_a_positional_only_parameter_calls_the_function_per_element(flow):
    @flow.node
    def items():
        return [1, 2, 3]

    @flow.node(map="items")
    def doubled(items, /):
        return items * 2

    assert flow.get("doubled") == [2, 4, 6]


def test_adding_map_to_a_node_does_not_serve_the_result_of_the_whole_list(flow):
    @flow.node
    def items():
        return [1, 2]

    @flow.node
    def shown(items):
        return str(items)

    assert flow.get("shown") == "[1, 2]"

    with pytest.warns(lf.DefinitionWarning):  # the same code, now called per element
        @flow.node(map="items")
        def shown(items):
            return str(items)

    assert flow.get("shown") == ["1", "2"]
    assert flow.run("shown").nodes["shown"].status == "cached"


# --------------------------------------------------------------------------- the manifest

N = 2 * CHUNK + CHUNK // 2  # three chunks, the last one half full


@pytest.fixture(params=["memory", "disk"])
def tiered(request, tmp_path) -> lf.Cache:
    """The memory tier alone, or the disk tier alone."""
    if request.param == "memory":
        return lf.Cache(disk=None)
    return lf.Cache(memory=None, disk=tmp_path / "cache")


@pytest.fixture
def doubling(tiered, calls) -> lf.Flow:
    """A flow whose map node doubles each element of the flow input ``xs``."""
    flow = lf.Flow("maps", cache=tiered)

    @flow.node(map="xs")
    def doubled(xs: list):
        calls["doubled"] += 1
        return xs * 2

    return flow


def _chunk_key(flow: lf.Flow, node: str, param: str, index: int, **inputs) -> str:
    """The key of chunk ``index`` of a map node's manifest, derived as the format documents:
    the node's content key without the mapped input (here: no other input), ``param``,
    ``index``."""
    code = flow.plan([node], inputs).nodes[node].fingerprint().digest
    return chunk_key(keys.content_key(code, {}, {}), param, index)


def test_an_appended_element_is_the_only_one_computed(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    assert doubling.get("doubled", xs=list(range(N + 1))) == [2 * x for x in range(N + 1)]
    assert calls["doubled"] == N + 1


def test_a_changed_element_is_the_only_one_computed(doubling, calls):
    items = list(range(N))
    doubling.get("doubled", xs=items)
    items[CHUNK + 7] = -1
    result = doubling.get("doubled", xs=items)
    assert calls["doubled"] == N + 1
    assert result[CHUNK + 7] == -2 and result == [2 * x for x in items]


def test_a_reordered_list_computes_nothing(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    reordered = list(range(N))[::-1]
    assert doubling.get("doubled", xs=reordered) == [2 * x for x in reordered]
    assert calls["doubled"] == N


def test_an_element_inserted_in_front_is_the_only_one_computed(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    assert doubling.get("doubled", xs=[-1, *range(N)]) == [2 * x for x in [-1, *range(N)]]
    assert calls["doubled"] == N + 1


def test_a_shrunk_list_computes_nothing(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    assert doubling.get("doubled", xs=list(range(0, N, 3))) == [2 * x for x in range(0, N, 3)]
    assert calls["doubled"] == N


def test_the_whole_list_after_a_sample_of_it_computes_nothing(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    sample = list(range(N - 1, 0, -N // 10))
    doubling.get("doubled", xs=[*sample, -1])  # rewrites chunk 0, carrying over its results
    assert doubling.get("doubled", xs=[*range(N), -2]) == [2 * x for x in [*range(N), -2]]
    assert calls["doubled"] == N + 2


def test_a_repeated_element_is_computed_once(doubling, calls):
    assert doubling.get("doubled", xs=[7] * 100 + [8]) == [14] * 100 + [16]
    assert calls["doubled"] == 2


def test_repeated_elements_never_share_one_mutable_result(tiered):
    flow = lf.Flow("maps", cache=tiered)

    @flow.node(map="xs")
    def boxed(xs: list):
        return [xs]

    computed = flow.get("boxed", xs=[1, 1])
    recalled = flow.get("boxed", xs=[2, 1, 1])  # 1 found by id, twice
    assert computed == [[1], [1]] and computed[0] is not computed[1]
    assert recalled == [[2], [1], [1]] and recalled[1] is not recalled[2]


def test_equal_int_bool_and_float_elements_are_computed_apart(tiered, calls):
    flow = lf.Flow("maps", cache=tiered)

    @flow.node(map="xs")
    def kind(xs: list):
        calls["kind"] += 1
        return type(xs).__name__

    assert flow.get("kind", xs=[1, 0, 1.0, 0.0]) == ["int", "int", "float", "float"]
    assert flow.get("kind", xs=[True, 1, False, 0, -0.0, 1.0]) == \
        ["bool", "int", "bool", "int", "float", "float"]
    assert calls["kind"] == 7  # the four of the first list, then True, False and -0.0


def test_a_nondeterministic_map_computes_every_element_every_time(tiered, calls):
    flow = lf.Flow("maps", cache=tiered)

    @flow.node(map="xs", deterministic=False)
    def drawn(xs: list):
        calls["drawn"] += 1
        return xs

    flow.get("drawn", xs=[1, 2, 3])
    flow.get("drawn", xs=[1, 2, 3, 4])
    assert calls["drawn"] == 7


def test_a_chunk_not_shaped_as_one_is_a_miss_for_its_elements(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    doubling.cache.store(_chunk_key(doubling, "doubled", "xs", 1, xs=[]), ("not", "a chunk"),
                         {"node": "doubled"})
    assert doubling.get("doubled", xs=list(range(N + 1))) == [2 * x for x in range(N + 1)]
    assert calls["doubled"] == N + CHUNK + 1


def test_a_chunk_written_before_chunks_recorded_their_cost_is_still_recalled(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    key = _chunk_key(doubling, "doubled", "xs", 1, xs=[])
    written, _ = doubling.cache.load(key)
    doubling.cache.store(key, written[:3], {"node": "doubled"})  # (ids, results, aligned)
    assert doubling.get("doubled", xs=list(range(N + 1))) == [2 * x for x in range(N + 1)]
    assert calls["doubled"] == N + 1


def test_a_chunk_whose_cost_is_not_shaped_as_one_is_a_miss_for_its_elements(doubling, calls):
    doubling.get("doubled", xs=list(range(N)))
    key = _chunk_key(doubling, "doubled", "xs", 1, xs=[])
    written, _ = doubling.cache.load(key)
    doubling.cache.store(key, (*written[:3], "free"), {"node": "doubled"})
    assert doubling.get("doubled", xs=list(range(N + 1))) == [2 * x for x in range(N + 1)]
    assert calls["doubled"] == N + CHUNK + 1


def test_chunks_written_for_different_lists_give_only_correct_results(doubling, calls):
    # two writers racing on one map leave a mix of their chunks: every chunk still pairs
    # its ids with their results, so a mix costs recomputations, never a wrong value
    doubling.get("doubled", xs=list(range(N)))
    key = _chunk_key(doubling, "doubled", "xs", 1, xs=[])
    written, _ = doubling.cache.load(key)
    doubling.cache.clear()
    doubling.get("doubled", xs=list(range(10**6, 10**6 + N)))  # another writer's chunks
    doubling.cache.store(key, written, {"node": "doubled"})  # ... but the first's chunk 1
    calls.clear()
    items = [*range(N), -1]
    assert doubling.get("doubled", xs=items) == [2 * x for x in items]
    assert calls["doubled"] == N + 1 - CHUNK  # chunk 1's results were found


def test_two_requests_writing_one_map_at_once_leave_only_correct_results(tiered, calls):
    flow = lf.Flow("maps", cache=tiered)
    both = threading.Barrier(2, timeout=60)

    @flow.node(map="xs")
    def doubled(xs: list, meeting: threading.Barrier = both):
        if xs == -1:
            meeting.wait()  # passes only while both requests are computing this map
        calls["doubled"] += 1
        return xs * 2

    first, second = [-1, *range(N)], [-1, *range(N // 2, N + N // 2)]
    with ThreadPoolExecutor(2) as pool:
        requests = [pool.submit(flow.get, "doubled", xs=xs) for xs in (first, second)]
        assert [r.result(60) for r in requests] == [[2 * x for x in first],
                                                   [2 * x for x in second]]
    for xs in (first, second):
        grown = [*xs, -2]
        assert flow.get("doubled", xs=grown) == [2 * x for x in grown]


def _chunk_file(folder: Path, key: str) -> Path:
    """The value file of the disk tier's entry under ``key``."""
    with sqlite3.connect(folder / "cache.db") as db:
        (name,) = db.execute("SELECT filename FROM Cache WHERE key = ?", (key,)).fetchone()
    db.close()
    return folder / name


def test_a_damaged_chunk_recomputes_only_its_elements(tmp_path, calls):
    folder = tmp_path / "cache"
    tier = DiskTier(folder, size_limit=2**30, min_file_size=1)  # every value in a file
    flow = lf.Flow("maps", cache=lf.Cache(tiers=[tier]))

    @flow.node(map="xs")
    def doubled(xs: list):
        calls["doubled"] += 1
        return xs * 2

    flow.get("doubled", xs=list(range(N)))
    path = _chunk_file(folder, _chunk_key(flow, "doubled", "xs", 1, xs=[]))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(lf.CacheWarning, match="checksum"):
        result = flow.get("doubled", xs=list(range(N + 1)))
    assert result == [2 * x for x in range(N + 1)]
    assert calls["doubled"] == N + CHUNK + 1


@pytest.fixture
def writing(tiered, tmp_path, calls) -> lf.Flow:
    """A flow whose map node writes one file per element into ``out`` and returns it."""
    flow = lf.Flow("maps", cache=tiered)
    out = tmp_path / "out"
    out.mkdir()

    @flow.node(map="xs")
    def written(xs: list):
        calls["written"] += 1
        path = out / f"{xs}.txt"
        path.write_text(f"element {xs}")
        return lf.File(path)

    return flow


def test_a_recalled_result_naming_a_file_puts_the_file_back(writing, tmp_path, calls):
    writing.get("written", xs=[1, 2])
    (tmp_path / "out" / "1.txt").unlink()
    writing.get("written", xs=[1, 2, 3])
    assert (tmp_path / "out" / "1.txt").read_text() == "element 1" and calls["written"] == 3


def test_a_carried_result_of_an_element_no_longer_listed_writes_no_file(writing, tmp_path):
    writing.get("written", xs=[1, 2])
    writing.get("written", xs=[1, 3])  # 2's result is carried over in the chunk
    (tmp_path / "out" / "2.txt").unlink()
    writing.get("written", xs=[1, 3, 4])
    assert not (tmp_path / "out" / "2.txt").exists()


def test_a_recalled_result_whose_file_bytes_are_gone_is_computed_again(writing, tmp_path,
                                                                       calls):
    writing.get("written", xs=[1, 2])
    for tier in writing.cache.tiers:  # the files' bytes go; the manifest stays
        for key in list(tier.keys()):
            if "file" in (tier.meta(key) or {}):
                tier.delete(key)
    (tmp_path / "out" / "1.txt").unlink()
    writing.get("written", xs=[1, 2, 3])
    assert (tmp_path / "out" / "1.txt").read_text() == "element 1"
    assert calls["written"] == 2 + 2  # 1 (its bytes were gone) and 3


_SCRIPT = """
    import sys
    import lazyflow as lf

    class Calls(list):
        pass

    lf.register_hasher(Calls, lambda calls: "calls")
    calls = Calls([0])
    flow = lf.Flow("maps", cache=lf.Cache(memory=None, disk=sys.argv[1]))

    @flow.node(map="xs")
    def doubled(xs: list):
        calls[0] += 1
        return xs * 2

    n = int(sys.argv[2])
    assert flow.get("doubled", xs=list(range(n))) == [2 * x for x in range(n)]
    print(calls[0])
"""


def test_a_fresh_process_reuses_the_manifest(tmp_path):
    script = tmp_path / "maps_flow.py"
    script.write_text(textwrap.dedent(_SCRIPT))

    def run(n: int) -> int:
        out = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(n)],
                             check=True, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        return int(out.stdout)

    assert run(N) == N
    assert run(N + 1) == 1
