"""lf.Skip: a node skips itself and its dependents with a reason; other branches run."""

from __future__ import annotations

import pytest

import lazyflow as lf


@pytest.fixture
def gated(flow, calls):
    @flow.node
    def batch(rows: list):
        calls["batch"] += 1
        if not rows:
            raise lf.Skip("no rows today")
        return rows

    @flow.node
    def total(batch):
        calls["total"] += 1
        return sum(batch)

    @flow.node
    def label(kind: str = "daily"):
        calls["label"] += 1
        return kind

    return flow


def test_a_skipping_node_and_its_dependents_are_skipped_with_the_reason(gated, calls):
    run = gated.run(["total", "label"], rows=[])
    assert run.nodes["batch"].status == "skipped"
    assert run.nodes["batch"].reason == "no rows today"
    assert run.nodes["total"].status == "skipped"
    assert run.nodes["total"].reason == "upstream 'batch' skipped: no rows today"
    assert calls["total"] == 0


def test_other_branches_still_run_when_one_skips(gated):
    run = gated.run(["total", "label"], rows=[])
    assert run.nodes["label"].status == "completed" and run["label"] == "daily"
    assert run.status == "completed"


def test_getting_a_skipped_target_warns_and_returns_none(gated):
    with pytest.warns(lf.SkippedWarning, match="target .total. has no value: skipped"):
        assert gated.get("total", rows=[]) is None


def test_getting_a_skipped_target_with_strict_raises(gated):
    with pytest.raises(lf.SkippedError, match="no rows today"):
        gated.get("total", rows=[], strict=True)


def test_a_skip_is_not_cached_so_the_node_runs_again(gated, calls):
    with pytest.warns(lf.SkippedWarning):
        gated.get("total", rows=[])
    with pytest.warns(lf.SkippedWarning):
        gated.get("total", rows=[])
    assert calls["batch"] == 2


def test_a_node_that_stops_skipping_computes_normally(gated):
    with pytest.warns(lf.SkippedWarning):
        gated.get("total", rows=[])
    assert gated.get("total", rows=[1, 2]) == 3


def test_skip_events_reach_observers_as_finished_nodes(gated):
    seen = []
    gated.events.subscribe(lambda e: seen.append((type(e).__name__, getattr(
        getattr(e, "record", None), "status", None))))
    gated.run("total", rows=[])
    assert ("NodeFinished", "skipped") in seen


def test_a_skip_is_never_retried(flow, calls):
    @flow.node(retries=3, retry_delay=0)
    def once():
        calls["once"] += 1
        raise lf.Skip("nothing to do")

    run = flow.run("once")
    assert run.nodes["once"].status == "skipped" and calls["once"] == 1


def test_a_chain_of_skips_names_where_it_started(gated):
    @gated.node
    def report(total):
        return total

    run = gated.run("report", rows=[])
    assert run.nodes["report"].reason == "upstream 'batch' skipped: no rows today"


def test_skips_give_the_same_records_under_the_threads_executor(gated):
    sync = gated.run(["total", "label"], rows=[])
    threaded = gated.run(["total", "label"], rows=[], executor="threads")
    assert {n: (r.status, r.reason) for n, r in sync.nodes.items() if n != "label"} == \
        {n: (r.status, r.reason) for n, r in threaded.nodes.items() if n != "label"}
