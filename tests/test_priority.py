"""``priority=``: among ready nodes, higher starts first; ``flow.watch(every=...)``: timers."""

from __future__ import annotations

import pytest

import lazyflow as lf


@pytest.fixture
def started():
    """The order nodes started in."""
    return []


def _fan(flow, started, priorities):
    for name, priority in priorities.items():
        def work(name=name):
            started.append(name)
            return name

        flow.node(name=name, priority=priority)(work)

    def gather(a, b, c, d):
        return [a, b, c, d]

    flow.node(gather)
    return flow


def test_ready_nodes_start_highest_priority_first(flow, started):
    _fan(flow, started, {"a": 0, "b": 5, "c": -1, "d": 5})
    flow.get("gather")
    assert started == ["b", "d", "a", "c"]  # equal priorities keep their order


def test_without_priorities_ready_nodes_start_in_plan_order(flow, started):
    _fan(flow, started, {"a": 0, "b": 0, "c": 0, "d": 0})
    flow.get("gather")
    assert started == ["a", "b", "c", "d"]


def test_a_run_override_sets_a_nodes_priority(flow, started):
    _fan(flow, started, {"a": 0, "b": 0, "c": 0, "d": 0})
    flow.get("gather", overrides={"c": {"priority": 10}})
    assert started[0] == "c"


def test_priority_orders_nodes_that_become_ready_later(flow, started):
    @flow.node
    def root():
        return 1

    for name, priority in (("low", 1), ("high", 9)):
        def work(root, name=name):
            started.append(name)
            return name

        flow.node(name=name, priority=priority)(work)

    @flow.node
    def both(low, high):
        return low + high

    flow.get("both")
    assert started == ["high", "low"]


def test_priority_must_be_an_integer(flow):
    with pytest.raises(lf.DefinitionError, match="priority= is an integer"):
        @flow.node(priority="high")
        def work():
            return 1


def test_watch_every_re_requests_on_a_timer(flow):
    pulls = []

    @flow.node(max_age=0.001)
    def prices():
        pulls.append(1)
        return len(pulls)

    runs = []
    flow.watch("prices", every=0.01, poll=True, max_runs=3, on_run=runs.append)
    assert len(runs) == 3 and len(pulls) == 3


def test_watch_every_refuses_what_is_not_a_duration(flow):
    @flow.node
    def prices():
        return 1

    with pytest.raises(ValueError, match="every="):
        flow.watch("prices", every="often", max_runs=1)
