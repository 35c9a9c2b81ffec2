"""``catch=``: a node receives ``lf.Failed`` in place of an input that failed."""

from __future__ import annotations

import pytest

import lazyflow as lf


@pytest.fixture
def broken():
    """Whether ``model`` fails: tests flip it between requests."""
    return {"model": True}


@pytest.fixture
def pipeline(flow, calls, broken):
    @flow.node
    def data():
        calls["data"] += 1
        return [1, 2, 3]

    @flow.node
    def model(data):
        calls["model"] += 1
        if broken["model"]:
            raise ValueError("singular matrix")
        return sum(data)

    @flow.node(catch=("model",))
    def report(model, data):
        calls["report"] += 1
        if isinstance(model, lf.Failed):
            return f"no model ({model.node}: {model.error})"
        return f"model {model}"

    @flow.node
    def publish(report):
        calls["publish"] += 1
        return report.upper()

    return flow


def test_a_catching_node_receives_the_failure_and_the_run_goes_on(pipeline):
    run = pipeline.run("report")
    assert run["report"] == "no model (model: singular matrix)"
    assert run.status == "completed"


def test_the_failed_node_keeps_status_failed_and_is_marked_caught(pipeline):
    run = pipeline.run("report")
    record = run.nodes["model"]
    assert record.status == "failed" and record.caught
    assert isinstance(record.error, ValueError)
    assert "caught by 'report'" in record.reason


def test_a_result_computed_from_a_failure_is_not_cached(pipeline, calls, broken):
    pipeline.get("report")
    run = pipeline.run("report")
    assert run.nodes["report"].status == "completed"
    assert "not cached: computed from a caught failure" in run.nodes["report"].reason
    assert calls["report"] == 2 and calls["model"] == 2  # the failed node is retried too


def test_nothing_computed_from_a_caught_failure_is_cached_downstream(pipeline, calls):
    assert pipeline.get("publish") == "NO MODEL (MODEL: SINGULAR MATRIX)"
    pipeline.get("publish")
    assert calls["publish"] == 2


def test_once_the_failed_node_succeeds_its_catcher_is_computed_and_cached(pipeline, calls,
                                                                         broken):
    pipeline.get("publish")
    broken["model"] = False
    assert pipeline.get("publish") == "MODEL 6"
    assert pipeline.run("publish").nodes["publish"].status == "cached"
    assert calls == {"data": 1, "model": 2, "report": 2, "publish": 2}


def test_a_failed_node_that_is_also_a_target_still_raises(pipeline):
    with pytest.raises(ValueError, match="singular matrix"):
        pipeline.get(["model", "report"])


def test_a_failure_a_consumer_does_not_catch_follows_the_nodes_error_policy(flow):
    @flow.node
    def model():
        raise ValueError("singular matrix")

    @flow.node(catch=("model",))
    def report(model):
        return "caught"

    @flow.node
    def audit(model):
        return "never"

    with pytest.raises(ValueError, match="singular matrix"):
        flow.get(["report", "audit"])


def test_under_on_error_skip_catchers_get_the_failure_and_the_others_are_skipped(flow):
    @flow.node(on_error="skip")
    def model():
        raise ValueError("singular matrix")

    @flow.node(catch=("model",))
    def report(model):
        return type(model).__name__

    @flow.node
    def audit(model):
        return "never"

    run = flow.run(["report", "audit"])
    assert run["report"] == "Failed"
    assert run.nodes["audit"].status == "skipped"
    assert not run.nodes["model"].caught and run.status == "failed"


def test_an_input_skipped_for_a_failure_above_it_is_caught_naming_that_failure(flow):
    @flow.node(on_error="skip")
    def fetch():
        raise ConnectionError("API down")

    @flow.node
    def model(fetch):
        return fetch

    @flow.node(catch=("model",))
    def report(model):
        return f"{model.node}: {type(model.error).__name__}"

    run = flow.run("report")
    assert run["report"] == "fetch: ConnectionError"
    assert run.nodes["model"].status == "skipped"


def test_an_input_skipped_by_lf_skip_skips_the_catching_node(flow):
    @flow.node
    def batch():
        raise lf.Skip("no rows today")

    @flow.node(catch=("batch",))
    def report(batch):
        return "never"

    run = flow.run("report")
    assert run.nodes["report"].status == "skipped"
    assert "no rows today" in run.nodes["report"].reason


def test_a_failed_value_never_shares_a_digest():
    error = ValueError("x")
    assert lf.hash_value(lf.Failed("m", error)) != lf.hash_value(lf.Failed("m", error))


def test_catch_must_name_an_input_node(flow):
    @flow.node
    def model():
        return 1

    @flow.node(catch=("modle",))
    def report(model):
        return model

    with pytest.raises(lf.DefinitionError, match="catch= names 'modle', which is not one of "
                                                 "its input nodes"):
        flow.get("report")


def test_catch_takes_a_node_name_or_a_tuple_of_them(flow):
    with pytest.raises(lf.DefinitionError, match="node 'report': catch= names the input nodes"):
        @flow.node(catch=3)
        def report(model):
            return model

    @flow.node(catch="model")
    def summary(model):
        return model

    assert flow["summary"].options.catch == ("model",)


def test_catching_works_under_the_threads_executor(pipeline):
    assert pipeline.get("report", executor="threads") == "no model (model: singular matrix)"


def test_a_map_node_catching_another_input_computes_each_element_from_the_failure_and_stores_none(
        pipeline, calls, broken):
    @pipeline.node(map="data", catch=("model",))
    def scaled(data, model):
        calls["scaled"] += 1
        return data * (0 if isinstance(model, lf.Failed) else model)

    assert pipeline.get("scaled") == [0, 0, 0]
    assert pipeline.get("scaled") == [0, 0, 0]
    assert calls["scaled"] == 6  # nothing computed from the failure was recalled
    broken["model"] = False
    assert pipeline.get("scaled") == [6, 12, 18]
    assert pipeline.run("scaled").nodes["scaled"].status == "cached"


def test_catch_cannot_name_the_input_a_map_node_maps_over(flow):
    @flow.node
    def rows():
        raise ValueError("no rows")

    @flow.node(map="rows", catch=("rows",))
    def parsed(rows):
        return rows

    with pytest.raises(lf.DefinitionError, match="catch= names 'rows', the input it maps over"):
        flow.get("parsed")


def test_catch_cannot_name_a_lazy_input(flow):
    @flow.node
    def model():
        raise ValueError("singular matrix")

    @flow.node(catch=("model",))
    def report(model: lf.Lazy[int]):
        return model()

    with pytest.raises(lf.DefinitionError, match="the input its lazy parameter 'model' calls"):
        flow.get("report")
