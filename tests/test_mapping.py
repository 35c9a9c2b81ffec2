"""Per-item map: each element cached on its own, results in order, failures name their index."""

from __future__ import annotations

import threading

import pytest

import lazyflow as lf


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
