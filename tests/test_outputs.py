"""Multiple outputs: each declared output is a node of its own, cached separately."""

from __future__ import annotations

import pytest

import lazyflow as lf


def test_each_output_is_an_addressable_node(flow):
    @flow.node(outputs=("train", "test"))
    def split(n: int = 10):
        return list(range(n))[:8], list(range(n))[8:]

    assert flow.get(["train", "test"]) == {"train": list(range(8)), "test": [8, 9]}


def test_a_dict_return_is_matched_by_name(flow):
    @flow.node(outputs=("low", "high"))
    def split():
        return {"high": 2, "low": 1}

    assert flow.get("low") == 1 and flow.get("high") == 2


def test_a_dependent_of_one_output_stays_cached_when_only_the_other_changes(flow, calls):
    @flow.node(outputs=("train", "test"))
    def split(seed: int):
        return [seed], [0]

    @flow.node
    def evaluate(test):
        calls["evaluate"] += 1
        return sum(test)

    flow.get("evaluate", seed=1)
    run = flow.run("evaluate", seed=2)
    assert run.nodes["split"].status == "completed"
    assert run.nodes["evaluate"].status == "cached"
    assert calls["evaluate"] == 1


def test_a_wrong_shaped_return_names_the_node_and_its_outputs(flow):
    @flow.node(outputs=("a", "b"))
    def split():
        return (1, 2, 3)

    with pytest.raises(lf.OutputError, match=r"node 'split' declares outputs \('a', 'b'\)"):
        flow.get("a")


def test_redefining_without_outputs_removes_the_output_nodes(flow):
    @flow.node(outputs=("a", "b"))
    def split():
        return 1, 2

    with pytest.warns(lf.DefinitionWarning):
        @flow.node
        def split():  # noqa: F811
            return 3

    assert "a" not in flow and flow.get("split") == 3


def test_outputs_must_be_a_tuple_of_names(flow):
    with pytest.raises(lf.DefinitionError, match="outputs= takes a tuple of names"):
        flow.node(lambda: 1, name="x", outputs="ab")


def test_the_function_runs_once_for_all_its_outputs(flow, calls):
    @flow.node(outputs=("train", "test"))
    def split(n: int = 4):
        calls["split"] += 1
        return [0] * n, [1] * n

    assert flow.get(["train", "test"]) == {"train": [0] * 4, "test": [1] * 4}
    assert flow.get("test") == [1] * 4
    assert calls["split"] == 1


def test_outputs_are_cached_separately(flow):
    @flow.node(outputs=("train", "test"))
    def split():
        return [0], [1]

    run = flow.run(["train", "test"])
    assert run.nodes["train"].key != run.nodes["test"].key
    assert flow.run("test").nodes["test"].status == "cached"
