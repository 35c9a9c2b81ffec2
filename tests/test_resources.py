"""Resources: local executors never start a node whose declared needs are not free; a node
needing more than the run has runs alone, with a warning, never refused."""

from __future__ import annotations

import os
import sys
import threading

import pytest

import lazyflow as lf

# How long one node waits for the other. Meeting proves the two ran together, so
# "together" tests wait generously (a loaded machine may start the second one late);
# "alone" tests must give up to finish, and a scheduler that wrongly overlapped the
# two would start the second one well within a second.
TOGETHER, ALONE = 60, 1


def _pair(flow: lf.Flow, needs: dict, barrier: threading.Barrier, patience: float) -> None:
    def meet():
        try:
            barrier.wait(timeout=patience)
            return "together"
        except threading.BrokenBarrierError:
            return "alone"

    flow.node(name="a", resources=needs)(meet)
    flow.node(name="b", resources=needs)(lambda: meet())


def test_two_nodes_that_each_need_all_cpus_never_run_together(flow):
    _pair(flow, {"cpus": 2}, threading.Barrier(2), ALONE)
    got = flow.get(["a", "b"], executor="threads", max_workers=4, resources=lf.Resources(cpus=2))
    assert got == {"a": "alone", "b": "alone"}


def test_nodes_whose_needs_fit_together_do_run_together(flow):
    _pair(flow, {"cpus": 1, "memory": "1GB"}, threading.Barrier(2), TOGETHER)
    got = flow.get(["a", "b"], executor="threads", max_workers=4,
                   resources=lf.Resources(cpus=2, memory="2GB"))
    assert got == {"a": "together", "b": "together"}


def test_a_custom_resource_is_shared_out_like_cpus(flow):
    _pair(flow, {"licenses": 1}, threading.Barrier(2), ALONE)
    got = flow.get(["a", "b"], executor="threads", max_workers=4,
                   resources=lf.Resources(licenses=1))
    assert got == {"a": "alone", "b": "alone"}


def test_a_node_needing_more_cpus_than_the_machine_has_runs_under_sync_with_a_warning(flow):
    more = (os.cpu_count() or 1) + 2

    @flow.node(resources={"cpus": more})
    def fit():
        return "fitted"

    with pytest.warns(lf.ResourcesWarning, match=rf"node 'fit' needs cpus={more} but the run "
                                                 rf"has cpus={os.cpu_count()} in all; it runs "
                                                 "alone"):
        assert flow.get("fit") == "fitted"


def test_a_node_needing_more_memory_than_the_run_has_runs_under_threads_with_a_warning(flow):
    @flow.node
    def small():
        return 1

    @flow.node(resources={"memory": "8GB"})
    def big(small):
        return small + 1

    with pytest.warns(lf.ResourcesWarning, match=r"node 'big' needs memory=8.0 GB but the run "
                                                 r"has memory=4.0 GB in all"):
        assert flow.get("big", executor="threads", resources=lf.Resources(memory="4GB")) == 2


def test_a_node_needing_more_than_the_run_has_runs_alone(flow):
    barrier = threading.Barrier(2)

    def meet():
        try:
            barrier.wait(timeout=ALONE)
            return "together"
        except threading.BrokenBarrierError:
            return "alone"

    flow.node(name="big", resources={"cpus": 4})(meet)
    flow.node(name="small")(lambda: meet())  # declares nothing, yet does not run beside big
    with pytest.warns(lf.ResourcesWarning, match="node 'big' needs cpus=4"):
        got = flow.get(["big", "small"], executor="threads", max_workers=4,
                       resources=lf.Resources(cpus=2))
    assert got == {"big": "alone", "small": "alone"}


def test_nodes_that_fit_still_run_together_beside_a_node_that_runs_alone(flow):
    _pair(flow, {"cpus": 1}, threading.Barrier(2), TOGETHER)
    flow.node(name="big", resources={"cpus": 4})(lambda a, b: (a, b))
    with pytest.warns(lf.ResourcesWarning):
        got = flow.get("big", executor="threads", max_workers=4,
                       resources=lf.Resources(cpus=2))
    assert got == ("together", "together")


def test_one_warning_per_run_names_every_resource_the_node_lacks(flow):
    @flow.node(resources={"gpus": 1, "cpus": 64, "memory": "1KB"})
    def train():
        return 1

    with pytest.warns(lf.ResourcesWarning) as warned:
        flow.get("train", resources=lf.Resources(cpus=2))
    assert len(warned) == 1
    assert "needs gpus=1, cpus=64 but the run has gpus=0, cpus=2" in str(warned[0].message)
    assert "lf.Resources(gpus=..., cpus=...)" in str(warned[0].message)


def test_the_warning_points_at_the_line_that_made_the_request(flow):
    @flow.node(resources={"cpus": 64})
    def fit():
        return 1

    with pytest.warns(lf.ResourcesWarning) as warned:
        line = sys._getframe().f_lineno + 1
        flow.get("fit", resources=lf.Resources(cpus=2))
    assert (warned[0].filename, warned[0].lineno) == (__file__, line)


def test_a_cached_node_that_needs_more_than_the_run_has_does_not_warn_again(flow):
    @flow.node(resources={"cpus": 64})
    def fit():
        return 1

    with pytest.warns(lf.ResourcesWarning):
        flow.get("fit", resources=lf.Resources(cpus=2))
    assert flow.get("fit", resources=lf.Resources(cpus=2)) == 1  # a hit: nothing to warn of


def test_gpus_default_to_none_so_a_gpu_node_says_how_to_declare_them(flow):
    @flow.node(resources={"gpus": 1})
    def train():
        return 1

    with pytest.warns(lf.ResourcesWarning, match=r"lf.Resources\(gpus=...\)"):
        assert flow.get("train") == 1


def test_run_overrides_change_a_nodes_resources(flow):
    @flow.node
    def fit():
        return 1

    with pytest.warns(lf.ResourcesWarning, match="node 'fit' needs cpus=64"):
        flow.get("fit", overrides={"fit": {"resources": {"cpus": 64}}})


@pytest.mark.parametrize("needs, message", [
    ({"cpus": -1}, r"resources\['cpus'\] must be a number >= 0"),
    ({"memory": "lots"}, r"resources\['memory'\] memory 'lots' is not a size"),
    ("cpus=2", r"resources= takes a dict"),
])
def test_bad_resources_fail_at_definition_naming_the_node(flow, needs, message):
    with pytest.raises(lf.DefinitionError, match=rf"node 'f': {message}"):
        @flow.node(resources=needs)
        def f():
            return 1


def test_default_totals_are_this_machines_cores_and_memory():
    totals = lf.Resources().totals
    assert totals["cpus"] == os.cpu_count()
    assert totals["memory"] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert totals["gpus"] == 0


def test_a_node_whose_entry_vanished_midway_is_gated_like_the_others(losing):
    flow, tier = losing
    barrier = threading.Barrier(2)

    def meet(tag=""):
        try:
            barrier.wait(timeout=ALONE)
            return "together"
        except threading.BrokenBarrierError:
            return "alone"

    flow.node(name="a", resources={"licenses": 1})(lambda: meet())
    flow.node(name="b", resources={"licenses": 1})(meet)

    @flow.node
    def reader(a, tag: str):  # needs no license: starts while b holds it
        return a

    options = {"executor": "threads", "max_workers": 4, "resources": lf.Resources(licenses=1)}
    flow.get(["reader", "b"], tag="first", **options)
    barrier.reset()
    tier.lose(flow.last_run.nodes["a"].key)
    with pytest.warns(lf.CacheWarning):  # a, read by reader, is computed again next to b
        run = flow.run(["reader", "b"], tag="second", **options)
    assert (run["reader"], run["b"]) == ("alone", "alone")
    assert run.nodes["a"].status == "completed"
