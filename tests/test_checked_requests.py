"""Requests are checked: unknown keywords raise before anything runs; near-miss parameter
names warn once. (The command line's ``-p`` is tested in test_cli.py, the converter behind
it in test_convert.py, ``lazyflow.toml``'s schema in test_cache_config.py.)"""

from __future__ import annotations

import inspect
import warnings

import pytest

import lazyflow as lf


@pytest.fixture
def report_flow(flow, calls):
    """``raw(n) -> report(raw, title)``, plus ``load(path)`` that no report needs."""

    @flow.node
    def raw(n: int):
        calls["raw"] += 1
        return list(range(n))

    @flow.node
    def report(raw, title="total"):
        calls["report"] += 1
        return f"{title}: {sum(raw)}"

    @flow.node
    def load(path):
        return path

    return flow


REQUESTS = {
    "get": lambda flow, **kw: flow.get("report", **kw),
    "run": lambda flow, **kw: flow.run("report", **kw),
    "explain": lambda flow, **kw: flow.explain("report", **kw),
    "submit": lambda flow, **kw: flow.submit("report", **kw).result(),
}


# --------------------------------------------------------------------------- unknown keywords


@pytest.mark.parametrize("request_", list(REQUESTS))
def test_every_request_refuses_a_misspelt_keyword_and_names_the_close_match(report_flow,
                                                                             request_):
    with pytest.raises(lf.UnknownInputError, match=r"'nn' is not an input of flow 'test': "
                       r"no node takes a parameter 'nn'; did you mean 'n'\?"):
        REQUESTS[request_](report_flow, n=3, nn=3)


def test_an_unknown_input_error_is_a_lazyflow_error_and_a_type_error(report_flow):
    with pytest.raises(lf.UnknownInputError) as caught:
        report_flow.get("report", nn=3)
    assert isinstance(caught.value, lf.LazyflowError)
    assert isinstance(caught.value, TypeError)
    assert (caught.value.name, caught.value.suggestions) == ("nn", ["n"])


def test_submit_refuses_an_unknown_keyword_before_starting_the_run(report_flow, calls):
    with pytest.raises(lf.UnknownInputError, match="'nn'"):
        report_flow.submit("report", n=3, nn=3)  # raises here, not from result()
    assert report_flow.last_run is None


def test_unknown_keywords_are_checked_before_anything_runs(report_flow, calls):
    with pytest.raises(lf.UnknownInputError):
        report_flow.get("report", n=3, titel="sum")
    assert calls == {}
    assert report_flow.last_run is None


def test_unknown_keywords_are_reported_before_missing_inputs(report_flow):
    with pytest.raises(lf.UnknownInputError, match="did you mean 'n'"):
        report_flow.get("report", nn=3)  # n is missing too


def test_an_inputs_dict_is_checked_like_keywords(report_flow):
    with pytest.raises(lf.UnknownInputError, match="did you mean 'title'"):
        report_flow.run("report", inputs={"n": 3, "titel": "sum"})


def test_a_keyword_naming_a_node_says_it_names_a_node_not_an_input(report_flow):
    with pytest.raises(lf.UnknownInputError) as caught:
        report_flow.get("report", n=3, raw=[1, 2])
    assert str(caught.value) == (
        "'raw' names a node of flow 'test', not an input; a node's value cannot be given as "
        "an input — pass the inputs it is computed from (n) instead, or redefine node 'raw'")
    assert caught.value.node == "raw"


def test_a_keyword_naming_a_node_without_inputs_says_to_redefine_it(flow):
    @flow.node
    def src():
        return 1

    @flow.node
    def dst(src):
        return src + 1

    with pytest.raises(lf.UnknownInputError, match="'src' names a node of flow 'test', not an "
                       "input; .* redefine node 'src' to change its value"):
        flow.get("dst", src=99)


def test_a_keyword_naming_a_parameter_wired_to_a_node_says_which_node(flow):
    @flow.node
    def clean():
        return [1, 2]

    @flow.node(inputs={"data": "clean"})
    def stats(data):
        return len(data)

    with pytest.raises(lf.UnknownInputError, match="'data' is a parameter of node 'stats' "
                       "wired to node 'clean' \\(inputs=\\), not an input"):
        flow.get("stats", data=[1, 2, 3])


def test_an_input_only_an_unneeded_node_takes_is_refused_naming_that_node(report_flow):
    with pytest.raises(lf.UnknownInputError, match="'path' is not an input of this request: "
                       "only node\\(s\\) 'load' take it"):
        report_flow.get("report", n=3, path="a.csv")
    assert report_flow.get("load", path="a.csv") == "a.csv"


def test_a_keyword_without_a_close_match_lists_the_inputs_of_the_request(report_flow):
    with pytest.raises(lf.UnknownInputError, match="'zzz' is not an input of flow 'test': .*; "
                       "the inputs of this request are: n, title$"):
        report_flow.get("report", n=3, zzz=1)


def test_a_misspelt_run_option_is_suggested_as_the_option(report_flow):
    with pytest.raises(lf.UnknownInputError, match="did you mean the option 'executor'"):
        report_flow.get("report", n=3, executer="threads")


def test_explain_accepts_the_run_options_and_computes_nothing(report_flow, calls):
    explanation = report_flow.explain("report", n=3, executor="threads", strict=True)
    assert [row.action for row in explanation.rows] == ["run", "run"]
    assert calls == {}


def test_explain_takes_an_inputs_dict_like_run(report_flow):
    explanation = report_flow.explain("report", inputs={"n": 3})
    assert [row.node for row in explanation.rows] == ["raw", "report"]


def test_check_inputs_checks_names_only_and_reports_no_missing_input(report_flow):
    report_flow.check_inputs("report", ["title"])  # n is missing: not this check's business
    with pytest.raises(lf.UnknownInputError):
        report_flow.check_inputs("report", ["titel"])


def test_a_node_defined_after_a_request_makes_its_inputs_known(report_flow):
    with pytest.raises(lf.UnknownInputError, match="no node takes a parameter 'seed'"):
        report_flow.get("report", n=3, seed=1)

    @report_flow.node
    def noise(seed):
        return seed

    with pytest.raises(lf.UnknownInputError, match="only node\\(s\\) 'noise' take it"):
        report_flow.get("report", n=3, seed=1)
    assert report_flow.get("noise", seed=1) == 1


# --------------------------------------------------------------------------- near-miss names


def _taking(parameter):
    """A function whose one parameter is named ``parameter``."""

    def user(**kwargs):
        return kwargs[parameter]

    user.__signature__ = inspect.Signature(
        [inspect.Parameter(parameter, inspect.Parameter.POSITIONAL_OR_KEYWORD)])
    return user


def _define_total_reading_raww(flow):
    @flow.node
    def raw():
        return [1, 2]

    @flow.node
    def total(raww):
        return sum(raww)

    return total


def test_a_parameter_one_edit_from_a_node_name_warns_when_planned(flow):
    _define_total_reading_raww(flow)
    with pytest.warns(lf.WiringWarning, match="^parameter 'raww' of node 'total' matches no "
                      "node; did you mean node 'raw'\\?"):
        flow.plan("total", {"raww": [1]})


def test_the_near_miss_warning_is_a_lazyflow_warning(flow):
    _define_total_reading_raww(flow)
    with pytest.warns(lf.LazyflowWarning):
        flow.get("total", raww=[1])


def test_the_near_miss_warning_is_given_once_per_node_definition(flow):
    _define_total_reading_raww(flow)
    with pytest.warns(lf.WiringWarning) as first:
        flow.get("total", raww=[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.get("total", raww=[2])  # another request: no warning
        flow.get(["total", "raw"], raww=[3])  # another plan of the same definition: none
    assert len(first) == 1


def test_redefining_the_node_warns_again(flow):
    _define_total_reading_raww(flow)
    with pytest.warns(lf.WiringWarning):
        flow.get("total", raww=[1])
    _define_total_reading_raww(flow)
    with pytest.warns(lf.WiringWarning):
        flow.get("total", raww=[1])


def test_the_near_miss_warning_points_at_the_function_definition(flow):
    total = _define_total_reading_raww(flow)
    with pytest.warns(lf.WiringWarning) as caught:
        flow.get("total", raww=[1])
    assert (caught[0].filename, caught[0].lineno) == (total.__code__.co_filename,
                                                      total.__code__.co_firstlineno)


def test_a_node_defined_later_one_edit_away_makes_the_next_plan_warn(flow):
    @flow.node
    def total(raww):
        return sum(raww)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.get("total", raww=[1])

    @flow.node
    def raw():
        return [1, 2]

    with pytest.warns(lf.WiringWarning, match="did you mean node 'raw'"):
        flow.get("total", raww=[1])


@pytest.mark.parametrize("parameter, node", [
    ("rw", "raw"),          # shorter than four characters
    ("rows", "raw"),        # two edits away
    ("data", "metadata"),   # far away
])
def test_parameters_short_or_more_than_one_edit_away_do_not_warn(flow, parameter, node):
    flow.add(lf.Node(lambda: 1, name=node))
    flow.add(lf.Node(_taking(parameter), name="user"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.plan("user", {parameter: 1})


@pytest.mark.parametrize("parameter", ["totl", "totals", "tota1", "ottal"])
def test_a_deletion_insertion_substitution_or_transposition_is_one_edit(flow, parameter):
    flow.add(lf.Node(lambda: 1, name="total"))
    flow.add(lf.Node(_taking(parameter), name="user"))
    with pytest.warns(lf.WiringWarning, match="did you mean node 'total'"):
        flow.plan("user", {parameter: 1})
