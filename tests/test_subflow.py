"""Sub-flows: include another flow's nodes under a prefix, or use a flow as one node."""

from __future__ import annotations

import time

import pytest

import lazyflow as lf
from lazyflow.subflow import groups


@pytest.fixture
def cache():
    return lf.Cache(disk=None)


@pytest.fixture
def inner(cache, calls):
    prep = lf.Flow("prep", cache=cache)

    @prep.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @prep.node
    def clean(raw, drop: int = 0):
        calls["clean"] += 1
        return [x for x in raw if x != drop]

    return prep


@pytest.fixture
def outer(cache):
    return lf.Flow("outer", cache=cache)


def test_included_nodes_are_reachable_under_the_prefix(outer, inner):
    assert outer.include(inner, prefix="prep") == ["prep.raw", "prep.clean"]
    assert outer.get("prep.clean", n=4) == [1, 2, 3]


def test_included_nodes_keep_their_keys_so_inner_results_are_hits(outer, inner, calls):
    inner.get("clean", n=4)
    outer.include(inner, prefix="prep")
    run = outer.run("prep.clean", n=4)
    assert run.nodes["prep.clean"].status == "cached" and calls["clean"] == 1


def test_outer_nodes_take_included_nodes_through_inputs(outer, inner):
    outer.include(inner, prefix="prep")

    @outer.node(inputs={"data": "prep.clean"})
    def total(data):
        return sum(data)

    assert outer.get("total", n=4) == 6


def test_inputs_wires_an_inner_flow_input_to_an_outer_node(outer, inner):
    @outer.node
    def size():
        return 3

    outer.include(inner, prefix="prep", inputs={"n": "size"})
    assert outer.get("prep.raw") == [0, 1, 2]


def test_including_again_replaces_the_prefix(outer, inner):
    outer.include(inner, prefix="prep")
    inner.remove("clean")
    outer.include(inner, prefix="prep")
    assert "prep.clean" not in outer and "prep.raw" in outer


def test_groups_nest_included_nodes_by_prefix(outer, inner):
    outer.include(inner, prefix="prep")
    assert groups(outer) == {"prep": ["prep.raw", "prep.clean"]}


def test_a_flow_as_a_node_takes_the_inner_flow_inputs(outer, inner):
    node = outer.add(inner.as_node("clean", name="prepared"))
    assert node.params == ("drop", "n")
    assert outer.get("prepared", n=3) == [1, 2]
    assert outer.get("prepared", n=3, drop=2) == [0, 1]


def test_a_flow_as_a_node_is_cached_in_the_outer_flow(outer, inner, calls):
    outer.add(inner.as_node("clean", name="prepared"))
    outer.get("prepared", n=3)
    run = outer.run("prepared", n=3)
    assert run.nodes["prepared"].status == "cached" and calls["clean"] == 1


def test_editing_a_function_of_the_inner_flow_invalidates_the_node(outer, inner, calls):
    outer.add(inner.as_node("clean", name="prepared"))
    outer.get("prepared", n=3)

    with pytest.warns(lf.DefinitionWarning):  # an edit, at another line than the fixture's
        @inner.node
        def raw(n: int):
            return list(range(n, 0, -1))

    assert outer.get("prepared", n=3) == [3, 2, 1]


def test_an_included_flow_cannot_use_a_bad_prefix(outer, inner):
    with pytest.raises(lf.DefinitionError, match="prefix"):
        outer.include(inner, prefix="bad prefix")


def test_dotted_node_names_must_be_dotted_identifiers(flow):
    with pytest.raises(lf.DefinitionError, match="not a valid identifier"):
        flow.node(lambda: 1, name="a..b")


def test_a_flow_as_a_node_over_a_nondeterministic_inner_node_asks_the_inner_flow_each_time(
        outer, inner, calls):
    @inner.node(deterministic=False)
    def sample(clean):
        calls["sample"] += 1
        return calls["sample"]

    outer.add(inner.as_node("sample", name="sampled"))
    assert outer.get("sampled", n=3) == 1
    assert outer.get("sampled", n=3) == 2


def test_a_flow_as_a_node_over_an_inner_node_with_max_age_recomputes_once_it_expired(
        outer, inner, calls, monkeypatch):
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])

    @inner.node(max_age="1h")
    def quotes(clean):
        calls["quotes"] += 1
        return calls["quotes"]

    outer.add(inner.as_node("quotes", name="quoted"))
    assert outer.get("quoted", n=3) == 1
    assert outer.get("quoted", n=3) == 1  # the inner entry is fresh: a hit in there
    now[0] += 2 * 3600
    assert outer.get("quoted", n=3) == 2


def test_adding_map_to_an_inner_node_invalidates_a_flow_as_a_node(outer, inner):
    @inner.node
    def shown(raw):
        return str(raw)

    outer.add(inner.as_node("shown", name="listed"))
    assert outer.get("listed", n=2) == "[0, 1]"

    with pytest.warns(lf.DefinitionWarning):  # the same code, now called per element
        @inner.node(map="raw")
        def shown(raw):
            return str(raw)

    assert outer.get("listed", n=2) == ["0", "1"]
