"""Requests: laziness, exact execution counts, early cutoff, errors, records."""

from __future__ import annotations

import pytest

import lazyflow as lf


def _chain(flow: lf.Flow, calls) -> None:
    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @flow.node
    def total(raw):
        calls["total"] += 1
        return sum(raw)


def test_get_runs_each_needed_node_once(flow, calls):
    _chain(flow, calls)
    assert flow.get("total", n=10) == 45
    assert calls == {"raw": 1, "total": 1}


def test_a_second_request_runs_nothing(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)
    run = flow.run("total", n=10)
    assert run["total"] == 45
    assert calls == {"raw": 1, "total": 1}
    assert run.nodes["total"].status == "cached"
    assert run.nodes["total"].tier == "memory"


def test_a_cached_target_touches_no_ancestor(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)
    run = flow.run("total", n=10)
    assert list(run.nodes) == ["total"]


def test_requesting_an_upstream_node_runs_only_its_ancestry(flow, calls):
    _chain(flow, calls)
    assert flow.get("raw", n=3) == [0, 1, 2]
    assert calls == {"raw": 1}


def test_changing_an_input_reruns_its_dependents(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)
    assert flow.get("total", n=11) == 55
    assert calls == {"raw": 2, "total": 2}


def test_get_with_a_list_returns_a_dict(flow, calls):
    _chain(flow, calls)
    assert flow.get(["raw", "total"], n=3) == {"raw": [0, 1, 2], "total": 3}
    assert calls == {"raw": 1, "total": 1}


def test_an_equal_upstream_value_leaves_dependents_cached(flow, calls):
    @flow.node
    def parity(n: int):
        calls["parity"] += 1
        return n % 2

    @flow.node
    def label(parity):
        calls["label"] += 1
        return "odd" if parity else "even"

    assert flow.get("label", n=2) == "even"
    run = flow.run("label", n=4)
    assert run["label"] == "even"
    assert calls == {"parity": 2, "label": 1}
    assert run.nodes["parity"].status == "completed"
    assert run.nodes["label"].status == "cached"


def test_redefining_a_node_reruns_it_and_not_its_cached_upstream(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)

    @flow.node
    def total(raw):
        calls["total2"] += 1
        return sum(raw) * 2

    assert flow.get("total", n=10) == 90
    assert calls == {"raw": 1, "total": 1, "total2": 1}


def test_defaults_are_flow_inputs(flow, calls):
    @flow.node
    def scaled(factor: float = 2.0):
        return 21 * factor

    assert flow.get("scaled") == 42.0
    assert flow.get("scaled", factor=1.0) == 21.0


def test_a_missing_input_names_the_node_and_parameter(flow, calls):
    _chain(flow, calls)
    with pytest.raises(lf.MissingInputError, match=r"node 'raw' needs input 'n'"):
        flow.get("total")


def test_an_unknown_target_suggests_close_matches(flow, calls):
    _chain(flow, calls)
    with pytest.raises(KeyError) as info:
        flow.get("totl", n=1)
    assert isinstance(info.value, lf.UnknownNodeError)
    assert "did you mean 'total'" in str(info.value)


def test_a_cycle_names_its_path(flow):
    @flow.node
    def a(b):
        return b

    @flow.node
    def b(a):
        return a

    with pytest.raises(lf.CycleError, match=r"a -> b -> a"):
        flow.get("a")


def test_explicit_wiring_connects_a_parameter_to_a_node(flow):
    @flow.node
    def clean():
        return [1, 2, 3]

    @flow.node(inputs={"data": "clean"})
    def stats(data):
        return len(data)

    assert flow.get("stats") == 3


def test_the_decorator_returns_the_plain_function(flow):
    @flow.node(name="model", version="2")
    def fit(x):
        return x + 1

    assert fit(1) == 2
    assert flow["model"].func is fit


def test_an_exception_keeps_its_type_and_names_the_node(flow, calls):
    @flow.node
    def raw():
        calls["raw"] += 1
        return 1

    @flow.node
    def broken(raw):
        raise ZeroDivisionError("boom")

    @flow.node
    def top(broken):
        return broken

    with pytest.raises(ZeroDivisionError) as info:
        flow.get("top")
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "node 'broken'" in notes and "top <- broken" in notes
    assert flow.last_run.nodes["broken"].status == "failed"
    assert flow.last_run.nodes["top"].status == "skipped"


def test_nodes_finished_before_a_failure_stay_cached(flow, calls):
    @flow.node
    def raw():
        calls["raw"] += 1
        return 1

    @flow.node
    def step(raw):
        raise ValueError("fix me")

    with pytest.raises(ValueError):
        flow.get("step")

    @flow.node
    def step(raw):  # noqa: F811 - the notebook re-runs a fixed cell
        return raw + 1

    assert flow.get("step") == 2
    assert calls == {"raw": 1}


def test_explain_says_why_each_node_would_run(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)
    report = flow.explain("total", n=11)
    assert report["raw"].action == "run"
    assert "parameter changed (n)" in report["raw"].reason
    assert report["total"].action == "run"
    assert calls == {"raw": 1, "total": 1}


def test_explain_reports_hits_with_their_tier(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)
    report = flow.explain("total", n=10)
    assert [(r.node, r.action, r.tier) for r in report.rows] == [("total", "hit", "memory")]


def test_explain_names_the_edited_function(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=10)

    @flow.node
    def total(raw):
        calls["total"] += 1
        return sum(raw) + 0

    assert "code changed (total)" in flow.explain("total", n=10)["total"].reason


def test_events_follow_a_run(flow, calls):
    _chain(flow, calls)
    seen = []
    flow.events.subscribe(lambda e: seen.append((type(e).__name__, getattr(e, "name", None)
                                                 or getattr(getattr(e, "record", None), "name",
                                                            None))))
    flow.get("total", n=2)
    assert seen == [("RunStarted", None), ("NodeStarted", "raw"), ("NodeFinished", "raw"),
                    ("NodeStarted", "total"), ("NodeFinished", "total"), ("RunFinished", None)]


def test_summary_lists_every_node_and_the_time_saved(flow, calls):
    _chain(flow, calls)
    flow.get("total", n=2)
    text = flow.run("total", n=2).summary()
    assert "total" in text and "cached" in text and "saved" in text


def test_cache_false_nodes_always_run(flow, calls):
    @flow.node(cache=False)
    def now():
        calls["now"] += 1
        return 1

    flow.get("now")
    flow.get("now")
    assert calls["now"] == 2


def test_a_cancel_token_stops_the_run_at_the_next_node_and_keeps_finished_nodes(flow, calls):
    token = lf.CancelToken()

    @flow.node
    def first():
        calls["first"] += 1
        token.cancel("enough")
        return 1

    @flow.node
    def second(first):
        calls["second"] += 1
        return first + 1

    with pytest.raises(lf.CancelledError, match="enough"):
        flow.run("second", cancel=token)
    assert flow.last_run.nodes["second"].status == "cancelled"
    assert flow.get("second") == 2
    assert calls == {"first": 1, "second": 1}
