"""Per-node policies: retries, timeouts, error handling, run overrides."""

from __future__ import annotations

import threading

import pytest

import lazyflow as lf


def test_a_node_is_retried_until_it_succeeds(flow, calls):
    @flow.node(retries=2, retry_delay=0)
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError("try again")
        return "ok"

    run = flow.run("flaky")
    assert run["flaky"] == "ok"
    assert run.nodes["flaky"].attempts == 3


def test_retries_stop_after_the_declared_number(flow, calls):
    @flow.node(retries=1, retry_delay=0)
    def broken():
        calls["broken"] += 1
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        flow.get("broken")
    assert calls["broken"] == 2


def test_only_the_listed_exceptions_are_retried(flow, calls):
    @flow.node(retries=3, retry_delay=0, retry_on=(ConnectionError,))
    def wrong():
        calls["wrong"] += 1
        raise ValueError("a bug, not a glitch")

    with pytest.raises(ValueError):
        flow.get("wrong")
    assert calls["wrong"] == 1


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_node_past_its_timeout_raises_node_timeout_naming_it(flow, executor):
    release = threading.Event()

    @flow.node(timeout=0.2)
    def stuck():
        release.wait(30)
        return 1

    try:
        with pytest.warns(lf.LazyflowWarning, match="may still be running"), \
                pytest.raises(lf.NodeTimeout, match="node 'stuck'"):
            flow.get("stuck", executor=executor)
    finally:
        release.set()
    assert flow.last_run.nodes["stuck"].status == "failed"


def test_on_error_skip_marks_dependents_skipped_and_finishes_other_branches(flow, calls):
    @flow.node(on_error="skip")
    def bad():
        raise RuntimeError("no data")

    @flow.node
    def after(bad):
        calls["after"] += 1
        return bad

    @flow.node
    def good():
        return 1

    @flow.node
    def both(after, good):
        return good

    run = flow.run(["both", "good"])
    assert run.failed == ["bad"]
    assert run.skipped == ["after", "both"]
    assert run.nodes["after"].reason == "upstream 'bad' failed"
    assert run["good"] == 1 and calls["after"] == 0
    assert run.status == "failed"


def test_get_returns_none_with_a_warning_for_a_skipped_target(flow):
    @flow.node(on_error="skip")
    def bad():
        raise RuntimeError("no data")

    with pytest.warns(lf.LazyflowWarning, match="target 'bad' has no value"):
        assert flow.get("bad") is None
    with pytest.raises(RuntimeError):
        flow.get("bad", strict=True)


def test_on_error_fallback_feeds_the_fallback_value_to_dependents(flow, calls):
    @flow.node(on_error="fallback", fallback=0)
    def rate():
        calls["rate"] += 1
        raise TimeoutError("service down")

    @flow.node
    def doubled(rate):
        return rate * 2

    assert flow.get("doubled") == 0
    assert flow.last_run.nodes["rate"].reason.startswith("fallback after TimeoutError")
    flow.get("doubled")
    assert calls["rate"] == 2  # a fallback is never cached as the node's result


def test_run_overrides_change_a_policy_for_one_run(flow, calls):
    @flow.node
    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 2:
            raise ConnectionError("glitch")
        return 1

    assert flow.get("flaky", overrides={"flaky": {"retries": 1, "retry_delay": 0}}) == 1


def test_a_bad_policy_fails_at_definition_naming_node_and_option(flow):
    with pytest.raises(lf.DefinitionError, match=r"node 'f': on_error= must be one of"):
        @flow.node(on_error="ignore")
        def f():
            return 1


def test_an_unknown_option_fails_at_definition(flow):
    with pytest.raises(lf.DefinitionError, match="unknown option"):
        @flow.node(retry=3)
        def f():
            return 1


def test_a_node_that_fell_back_has_its_own_status_and_a_value(flow):
    from lazyflow.run import STATUSES, has_value

    @flow.node(on_error="fallback", fallback=[])
    def fetch():
        raise ConnectionError("down")

    @flow.node
    def count(fetch):
        return len(fetch)

    run = flow.run("count")
    record = run.nodes["fetch"]
    assert record.status == "fallback" and has_value(record.status)
    assert run["count"] == 0 and run.status == "completed"
    assert STATUSES["fallback"].colour != STATUSES["completed"].colour
