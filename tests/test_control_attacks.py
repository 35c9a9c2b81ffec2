"""Attacks on control flow (docs/control-flow.md): branches over lazy inputs, catch=,
on_error=, lf.Skip and outputs=. A result served is what the node computes now; a
stand-in (a fallback, a skip) is never stored or served as a node's own value."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


class Switch:
    """Outside state a node reads (a service up or down); keys ignore it, as they would
    a network call's answer."""

    def __init__(self, on: bool) -> None:
        self.on = on


lf.register_hasher(Switch, lambda switch: "switch")


# --------------------------------------------------------------------------- fallbacks


def test_a_consumer_changing_the_fallback_in_place_does_not_change_the_next_fallback(flow):
    @flow.node(on_error="fallback", fallback=[])
    def rows():
        raise ConnectionError("database down")

    @flow.node
    def counted(rows):
        rows.append("seen")  # a consumer working on its input in place
        return len(rows)

    assert [flow.get("counted") for _ in range(3)] == [1, 1, 1]


def test_a_fallback_value_handed_to_the_caller_is_its_own_copy(flow):
    @flow.node(on_error="fallback", fallback={"rows": []})
    def rows():
        raise ConnectionError("database down")

    flow.get("rows")["rows"].append("mine")
    assert flow.get("rows") == {"rows": []}


def test_outputs_with_a_fallback_that_does_not_fit_them_is_refused_when_defined(flow):
    with pytest.raises(lf.DefinitionError, match=r"node 'split': on_error='fallback' with "
                       r"outputs=\('train', 'test'\) needs fallback= a tuple of 2 values"):
        @flow.node(outputs=("train", "test"), on_error="fallback")
        def split(data):
            return data[:1], data[1:]

    assert "split" not in flow.nodes and "train" not in flow.nodes


def test_outputs_fall_back_one_element_each_and_compute_again_once_the_error_is_gone(flow):
    up = Switch(False)

    @flow.node(outputs=("train", "test"), on_error="fallback", fallback=((), ()))
    def split(data, up):
        if not up.on:
            raise ConnectionError("storage down")
        return data[:1], data[1:]

    assert flow.get("test", data=(1, 2, 3), up=up) == ()
    up.on = True
    assert flow.get("test", data=(1, 2, 3), up=up) == (2, 3)


# --------------------------------------------------------------------------- lf.Skip


def test_a_node_returning_lf_skip_instead_of_raising_it_is_an_error_naming_the_node(flow):
    @flow.node
    def rows(day: str):
        return lf.Skip("no rows today")

    with pytest.raises(lf.OutputError, match=r"node 'rows' returned lf.Skip\('no rows "
                       r"today'\) instead of raising it; write `raise lf.Skip\(...\)`"):
        flow.get("rows", day="mon")


def test_a_returned_lf_skip_is_not_cached_so_the_node_computes_its_value_next_time(tmp_path):
    flow = lf.Flow("skips", cache=lf.Cache(disk=tmp_path / "cache"))
    empty = Switch(True)

    @flow.node
    def rows(day: str, empty):
        return lf.Skip("no rows today") if empty.on else ["row"]

    @flow.node
    def total(rows):
        return len(rows)

    with pytest.raises(lf.OutputError):
        flow.get("total", day="mon", empty=empty)
    empty.on = False
    assert flow.get("total", day="mon", empty=empty) == 1


def test_a_lazy_node_returning_lf_skip_is_refused_the_same_way(flow):
    @flow.node
    def rows():
        return ["row"]

    @flow.node
    def pick(flag: bool, rows: lf.Lazy[list]):
        return rows() if flag else lf.Skip("not today")

    with pytest.raises(lf.OutputError, match="node 'pick' returned lf.Skip"):
        flow.get("pick", flag=False)
    assert flow.get("pick", flag=True) == ["row"]


def test_a_map_element_returning_lf_skip_fails_and_is_not_kept_in_the_manifest(flow):
    empty = Switch(True)

    @flow.node(map="days")
    def per_day(days, empty):
        return lf.Skip("empty day") if empty.on and days == "tue" else days.upper()

    with pytest.raises(lf.OutputError, match="node 'per_day' returned lf.Skip"):
        flow.get("per_day", days=["mon", "tue"], empty=empty)
    empty.on = False
    assert flow.get("per_day", days=["mon", "tue"], empty=empty) == ["MON", "TUE"]
    assert flow.last_run.nodes["per_day"].reason.endswith("1 of 2 elements to compute")


# --------------------------------------------------------------------------- branches


def test_condition_values_that_compare_equal_each_take_their_own_result(flow):
    @flow.node
    def yes():
        return "yes"

    @flow.node
    def no():
        return "no"

    @flow.node
    def pick(cond, yes: lf.Lazy[str], no: lf.Lazy[str]):
        return (yes() if cond else no()) + repr(cond)

    conditions = [0, False, 0.0, -0.0, None, 1, True, 1.0]
    assert [flow.get("pick", cond=c) for c in conditions] == [
        ("yes" if c else "no") + repr(c) for c in conditions]


def test_a_node_catching_its_lazy_inputs_error_itself_is_skipped_never_cached(flow):
    up = Switch(False)

    @flow.node(on_error="skip")
    def model(up):
        if not up.on:
            raise ConnectionError("down")
        return "model"

    @flow.node
    def report(model: lf.Lazy[str]):
        try:
            return model()
        except Exception:  # the thunk's failure never reaches the node: it is skipped
            return "caught"

    with pytest.warns(lf.SkippedWarning):
        assert flow.get("report", up=up) is None
    up.on = True
    assert flow.get("report", up=up) == "model"


def test_a_catch_below_a_lazy_call_is_computed_from_the_real_value_once_the_failure_goes(flow):
    up = Switch(False)

    @flow.node
    def model(up):
        if not up.on:
            raise ValueError("singular")
        return 2

    @flow.node(catch=("model",))
    def report(model):
        return "no model" if isinstance(model, lf.Failed) else f"model {model}"

    @flow.node
    def pick(flag: bool, report: lf.Lazy[str]):
        return report() if flag else "other"

    assert flow.get("pick", flag=True, up=up) == "no model"
    up.on = True
    assert flow.get("pick", flag=True, up=up) == "model 2"


def test_a_lazy_input_returned_inside_a_value_is_an_error_not_a_constant_digest(flow):
    """A thunk inside a result hashed to one constant: its dependent was served the first
    value of the input whatever the input computed to later."""
    @flow.node
    def a(n: int):
        return n

    @flow.node
    def pick(a: lf.Lazy[int]):
        a()
        return {"getter": a}

    @flow.node
    def use(pick):
        return pick["getter"]()

    with pytest.raises(lf.HashingError, match=r"node 'pick' returned it: it is lazy input "
                       r"'a', not its value: call it \(a\(\)\)"):
        flow.get("use", n=1)


def test_a_lazy_input_returned_by_an_uncached_node_leaves_its_dependents_current(flow):
    @flow.node
    def a(n: int):
        return n

    @flow.node(cache=False)
    def pick(a: lf.Lazy[int]):
        a()
        return {"getter": a}

    @flow.node
    def use(pick):
        return pick["getter"]()

    with pytest.warns(lf.LazyflowWarning, match="'pick' returned a Thunk that cannot be "
                      "hashed"):
        assert [flow.get("use", n=n) for n in (1, 2)] == [1, 2]


def test_a_thunk_called_outside_the_node_that_takes_it_is_a_clear_error(flow):
    @flow.node
    def a(n: int):
        return n

    @flow.node(cache=False)
    def pick(a: lf.Lazy[int]):
        return [a]  # handed on, never called here

    @flow.node
    def use(pick):
        return pick[0]()

    with pytest.warns(lf.LazyflowWarning, match="returned a Thunk"), \
            pytest.raises(lf.OutputError, match=r"node 'use' called lazy input 'a' of another "
                          r"node, which handed the thunk on instead of its value"):
        flow.get("use", n=1)


_BRANCH_MODULE = """
import lazyflow as lf
flow = lf.Flow("branches", cache=lf.Cache(disk={cache!r}, memory=0))

@flow.node
def linear():
    return {linear!r}

@flow.node
def forest():
    return "forest"

@flow.node
def model(kind: str, linear: lf.Lazy[str], forest: lf.Lazy[str]):
    return linear() if kind == "linear" else forest()

print(flow.get("model", kind={kind!r}))
"""


def test_a_branch_flipped_while_the_lazily_needed_node_is_edited_serves_current_values(
        tmp_path):
    """Each request is a fresh process over the same disk cache, as after a restart."""
    def request(kind: str, linear: str) -> str:
        script = tmp_path / "flow.py"
        script.write_text(textwrap.dedent(_BRANCH_MODULE.format(
            cache=str(tmp_path / "cache"), linear=linear, kind=kind)))
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              check=True)
        return done.stdout.strip()

    assert request("linear", "v1") == "v1"
    assert request("forest", "v2") == "forest"  # linear edited while not taken
    assert request("linear", "v2") == "v2"
    assert request("linear", "v1") == "v1"  # the edit undone: the first entry again
