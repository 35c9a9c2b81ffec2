"""``check=``: a node's result is checked before it is stored; checks are not in the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


@pytest.fixture
def rows():
    """The rows ``raw`` returns: tests change them between requests."""
    return [3, 1, 2]


def _non_empty(values):
    return len(values) > 0


def test_a_result_that_passes_its_check_is_returned_and_cached(flow, calls, rows):
    @flow.node(check=_non_empty)
    def raw():
        calls["raw"] += 1
        return list(rows)

    assert flow.get("raw") == [3, 1, 2]
    assert flow.run("raw").nodes["raw"].status == "cached"
    assert calls["raw"] == 1


def test_a_check_returning_false_raises_check_error_naming_the_node_and_the_check(flow):
    @flow.node(check=_non_empty)
    def raw():
        return []

    with pytest.raises(lf.CheckError, match=r"node 'raw': check '_non_empty' failed: "
                                            r"returned False") as caught:
        flow.get("raw")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, lf.LazyflowError)
    assert caught.value.node == "raw"


def test_a_lambda_check_is_named_by_where_it_was_written(flow):
    @flow.node(check=lambda df: len(df) > 0)
    def raw():
        return []

    with pytest.raises(lf.CheckError, match=r"check <lambda> \(test_checks.py:\d+\) failed"):
        flow.get("raw")


def test_a_check_that_raises_fails_the_node_with_the_exception_as_its_cause(flow):
    def positive(values):
        raise RuntimeError("no column 'y'")

    @flow.node(check=positive)
    def raw():
        return [1]

    with pytest.raises(lf.CheckError, match="raised RuntimeError: no column 'y'") as caught:
        flow.get("raw")
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_failed_result_is_not_cached_so_the_next_request_computes_again(flow, calls, rows):
    @flow.node(check=_non_empty)
    def raw():
        calls["raw"] += 1
        return list(rows)

    rows.clear()
    with pytest.raises(lf.CheckError):
        flow.get("raw")
    rows.append(7)
    assert flow.get("raw") == [7]
    assert calls["raw"] == 2


def test_nothing_computed_from_a_failed_result_runs_or_is_stored(flow, calls):
    @flow.node(check=_non_empty)
    def raw():
        return []

    @flow.node
    def total(raw):
        calls["total"] += 1
        return sum(raw)

    with pytest.raises(lf.CheckError):
        flow.get("total")
    assert calls["total"] == 0
    assert [row.action for row in flow.explain("total").rows] == ["run", "run"]


def test_checks_run_in_order_and_the_first_failing_one_is_named(flow):
    seen = []

    def first(values):
        seen.append("first")
        return True

    def second(values):
        seen.append("second")
        return False

    def third(values):
        seen.append("third")
        return False

    @flow.node(check=(first, second, third))
    def raw():
        return [1]

    with pytest.raises(lf.CheckError, match="check 'test_checks_run_in_order.*second'"):
        flow.get("raw")
    assert seen == ["first", "second"]


def test_a_check_that_is_not_callable_is_refused_when_the_node_is_declared(flow):
    with pytest.raises(lf.DefinitionError, match="node 'raw': check= takes a callable"):
        @flow.node(check=(_non_empty, "len > 0"))
        def raw():
            return [1]


def test_unchanged_checks_do_not_run_on_a_hit(flow, calls):
    def counted(values):
        calls["check"] += 1
        return True

    @flow.node(check=counted)
    def raw():
        return [1]

    flow.get("raw")
    flow.get("raw")
    assert calls["check"] == 1


def test_adding_a_check_to_a_cached_node_checks_the_stored_value_once_without_recomputing(
        flow, calls):
    def raw():
        calls["raw"] += 1
        return [1, 2]

    flow.node(raw)
    flow.get("raw")

    def counted(values):
        calls["check"] += 1
        return len(values) == 2

    flow.node(check=counted)(raw)
    run = flow.run("raw")
    assert run.nodes["raw"].status == "cached" and run["raw"] == [1, 2]
    flow.get("raw")
    assert calls == {"raw": 1, "check": 1}


def test_a_changed_check_the_stored_value_fails_raises_and_drops_the_entry(flow, calls):
    def raw():
        calls["raw"] += 1
        return [1, 2]

    flow.node(raw)
    flow.get("raw")
    flow.node(check=lambda values: len(values) > 5)(raw)
    with pytest.raises(lf.CheckError):
        flow.get("raw")
    assert calls["raw"] == 1  # the stored value was checked, not recomputed
    flow.node(raw)  # the check taken out: the dropped entry is computed again
    assert flow.get("raw") == [1, 2]
    assert calls["raw"] == 2


def test_a_failed_check_follows_the_nodes_error_policy(flow):
    @flow.node(check=_non_empty, on_error="fallback", fallback=[0])
    def raw():
        return []

    run = flow.run("raw")
    assert run["raw"] == [0]
    assert isinstance(run.nodes["raw"].error, lf.CheckError)


def test_a_map_nodes_check_sees_the_whole_list(flow):
    @flow.node(map="items", check=lambda values: sum(values) < 10)
    def double(items):
        return items * 2

    assert flow.get("double", items=[1, 2]) == [2, 4]
    with pytest.raises(lf.CheckError):
        flow.get("double", items=[1, 2, 3])


def test_checks_run_under_the_threads_executor(flow):
    @flow.node(check=_non_empty)
    def raw():
        return []

    with pytest.raises(lf.CheckError):
        flow.get("raw", executor="threads")


def test_a_new_process_does_not_run_checks_a_stored_value_already_passed(tmp_path):
    script = textwrap.dedent(f"""
        import lazyflow as lf
        flow = lf.Flow("checks", cache=lf.Cache(disk={str(tmp_path / "cache")!r}))
        ran = []
        def raw():
            return [1, 2]
        def counted(values):
            ran.append(1)
            return True
        flow.node(raw)
        flow.get("raw")                       # stored without checks
        flow.node(check=counted)(raw)
        flow.get("raw")                       # the new check runs once on the stored value
        print(len(ran))
    """)
    again = textwrap.dedent(f"""
        import lazyflow as lf
        flow = lf.Flow("checks", cache=lf.Cache(disk={str(tmp_path / "cache")!r}))
        ran = []
        def raw():
            return [1, 2]
        def counted(values):
            ran.append(1)
            return True
        flow.node(check=counted)(raw)
        run = flow.run("raw")
        print(run.nodes["raw"].status, len(ran))
    """)
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True)
    second = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True,
                            check=True)
    assert first.stdout.split() == ["1"]
    assert second.stdout.split() == ["cached", "0"]
