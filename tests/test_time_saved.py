"""Honest "saved" figures: every cached node's cost counted once per request."""

from __future__ import annotations

import pytest

import lazyflow as lf
from lazyflow.engine.ancestry import CAP
from lazyflow.run import _seconds


@pytest.fixture
def diamond(flow):
    @flow.node
    def a():
        lf.report(tokens=100)
        return sum(range(20_000))

    @flow.node
    def b(a):
        return a + 1

    @flow.node
    def c(a):
        return a + 2

    @flow.node
    def d(b, c):
        lf.report(tokens=1)
        return b + c

    return flow


def _durations(run):
    return {name: record.duration for name, record in run.nodes.items()}


def test_a_hit_over_a_diamond_counts_the_shared_root_once(diamond):
    first = _durations(diamond.run("d"))
    run = diamond.run("d")
    assert run.nodes["d"].status == "cached"
    assert run.time_saved == pytest.approx(sum(first.values()))
    assert run.nodes["d"].saved == pytest.approx(sum(first.values()))


def test_two_hits_sharing_an_ancestor_count_it_once(diamond):
    first = _durations(diamond.run("d"))
    run = diamond.run(["b", "c"])
    assert run.cached == ["b", "c"]
    assert run.time_saved == pytest.approx(first["a"] + first["b"] + first["c"])


def test_an_ancestor_the_request_computed_is_not_counted_as_saved(diamond):
    first = _durations(diamond.run("d"))

    with pytest.warns(lf.DefinitionWarning):
        @diamond.node(name="c")
        def c_again(a):  # c's code changed: computed now, its input a still cached
            return a + 3

    run = diamond.run("d")
    assert run.nodes["c"].status == "completed" and run.nodes["b"].status == "cached"
    assert run.time_saved == pytest.approx(first["a"] + first["b"])


def test_saved_metrics_count_a_shared_ancestors_figures_once(diamond):
    diamond.get("d")
    assert diamond.run(["b", "c"]).saved_metrics() == {"tokens": 100}
    assert diamond.run("d").saved_metrics() == {"tokens": 101}


def test_the_summary_shows_the_deduplicated_figure(diamond):
    diamond.get("d")
    run = diamond.run("d")
    footer = run.summary().splitlines()
    assert f"cache saved {_seconds(run.time_saved)}" in footer[-2]
    assert footer[-1] == "saved: 101 tokens"


def test_an_ancestry_past_the_cap_falls_back_to_the_per_path_total(flow):
    namespace: dict = {}
    exec("def n0():\n    return 0\n" + "".join(
        f"def n{i}(n{i - 1}):\n    return n{i - 1} + 1\n" for i in range(1, CAP + 2)),
        namespace)
    for i in range(CAP + 2):
        flow.node(namespace[f"n{i}"])
    last = f"n{CAP + 1}"
    first = flow.run(last)
    run = flow.run(last)
    assert run.nodes[last].saved_from is None
    assert run.time_saved == pytest.approx(sum(r.duration for r in first.nodes.values()))


@pytest.fixture
def prompts(flow):
    @flow.node(map="texts")
    def answers(texts):
        lf.report(tokens=len(texts))
        return texts.upper()

    return flow


def test_a_hit_on_a_map_saves_every_element_not_only_those_its_last_run_computed(prompts):
    prompts.get("answers", texts=["a", "bb", "ccc"])
    extended = prompts.run("answers", texts=["a", "bb", "ccc", "dddd"])
    assert extended.metrics() == {"tokens": 4}  # one element called
    hit = prompts.run("answers", texts=["a", "bb", "ccc", "dddd"])
    assert hit.nodes["answers"].status == "cached"
    assert hit.saved_metrics() == {"tokens": 10}


def test_a_map_computed_now_counts_the_earlier_elements_it_reused_as_saved(prompts):
    prompts.get("answers", texts=["aa", "bb"])
    run = prompts.run("answers", texts=["aa", "bb", "cc", "dd"])
    assert run.nodes["answers"].status == "completed"
    assert run.metrics() == {"tokens": 4}
    assert run.saved_metrics() == {"tokens": 4}
    assert run.time_saved > 0


def test_a_recalled_elements_saved_figure_is_its_chunks_average(prompts):
    prompts.get("answers", texts=["a", "bbb"])  # 4 tokens over 2 elements: 2 each
    run = prompts.run("answers", texts=["bbb", "x"])  # "bbb" recalled by id, "x" called
    assert run.metrics() == {"tokens": 1}
    assert run.saved_metrics() == {"tokens": 2}


def test_a_map_computed_whole_saves_nothing_in_its_own_run(prompts):
    run = prompts.run("answers", texts=["a", "bb"])
    assert run.saved_metrics() == {} and run.time_saved == 0


def test_a_maps_whole_figures_stay_whole_numbers_when_saved(prompts):
    prompts.get("answers", texts=["a", "bb", "ccc"])
    prompts.get("answers", texts=["a", "bb", "ccc", "dddd"])
    saved = prompts.run("answers", texts=["a", "bb", "ccc", "dddd"]).saved_metrics()
    assert saved == {"tokens": 10} and type(saved["tokens"]) is int  # printed "10", not "10.0"
