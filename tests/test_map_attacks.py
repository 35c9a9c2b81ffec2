"""Map nodes attacked from outside: every result (each element of it) is what the function
computes now for the current elements, and a bad mapped input is a clear error naming the
node, the parameter and what to do."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lazyflow as lf


class Era(dict):
    """What an element's result depends on besides the element (the world's state, as a
    remote API's answer would): keys ignore it, as they ignore the world."""


lf.register_hasher(Era, lambda era: "era")


@pytest.fixture
def fetching(flow, clock):
    """A map node whose results go stale after 10 minutes, reporting the era they were
    computed in."""
    era = Era(now=0)

    @flow.node(map="items", max_age="10m")
    def fetch(items: list):
        return (items, era["now"])

    def later(minutes: float) -> None:
        clock.advance(minutes * 60)
        era["now"] += 1

    return flow, later


def _described(item: object) -> str:
    return f"{type(item).__name__}:{item!r}"


# --------------------------------------------------------------------------- max_age


def test_results_recalled_into_a_rewritten_chunk_still_expire_when_they_were_computed(
        fetching):
    flow, later = fetching
    flow.get("fetch", items=[1, 2, 3])  # era 0
    later(6)
    flow.get("fetch", items=[1, 2, 3, 4])  # appends 4 (era 1): the chunk is rewritten
    later(6)
    # 1, 2 and 3 were computed 12 minutes ago: past max_age, whatever chunk holds them
    assert flow.get("fetch", items=[1, 2, 3, 5]) == [(1, 2), (2, 2), (3, 2), (5, 2)]


def test_a_map_value_holding_recalled_results_is_as_old_as_they_are(fetching):
    flow, later = fetching
    flow.get("fetch", items=[1, 2])  # era 0
    later(6)
    flow.get("fetch", items=[1, 2, 3])  # the whole value is stored now, holding era-0 results
    later(6)
    assert flow.get("fetch", items=[1, 2, 3])[:2] == [(1, 2), (2, 2)]


def test_recalled_results_younger_than_max_age_are_still_served(fetching):
    flow, later = fetching
    flow.get("fetch", items=[1, 2])  # era 0
    later(3)
    flow.get("fetch", items=[1, 2, 3])
    later(3)
    assert flow.get("fetch", items=[2, 1, 3, 4]) == [(2, 0), (1, 0), (3, 1), (4, 2)]


# --------------------------------------------------------------------------- the mapped input


def test_mapping_over_a_set_is_refused_naming_the_node_and_what_to_do(flow):
    @flow.node(map="items")
    def same(items):
        return items

    # equal sets, equal digests, and two orders: a stored list could not keep its order
    assert list({8, 0}) != list({0, 8})
    with pytest.raises(lf.MapError, match=r"node 'same' maps over 'items', a set: .*"
                                          r"map over sorted\(items\) or a list"):
        flow.get("same", items={8, 0})


def test_mapping_over_a_zero_dimensional_array_is_a_map_error_naming_the_node(flow):
    @flow.node(map="items")
    def same(items):
        return items

    with pytest.raises(lf.MapError, match="node 'same' maps over 'items'.*ndarray that "
                                          "cannot be iterated"):
        flow.get("same", items=np.array(5))


def test_a_dict_is_mapped_over_its_keys_in_insertion_order(flow):
    @flow.node(map="items")
    def same(items):
        return items

    assert flow.get("same", items={"b": 1, "a": 2}) == ["b", "a"]
    assert flow.get("same", items={"a": 2, "b": 1}) == ["a", "b"]


# --------------------------------------------------------------------------- equal-but-different


_NAN_PAYLOAD = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]


class Text(str):
    """A str subclass: equal to its str, and not the same element."""


@pytest.mark.parametrize(("before", "after"), [
    (1, 1.0), (1, True), (1.0, True), (0.0, -0.0), (float("nan"), _NAN_PAYLOAD),
    ("a", Text("a")), ("\u00e9", "e\u0301"), ("a", b"a"), ("a", "a\x00"),
    (np.int64(1), 1), (2**64, 2**64 + 1)],
    ids=["int-float", "int-bool", "float-bool", "zero-signs", "nan-payloads", "str-subclass",
         "composed-decomposed", "str-bytes", "nul", "numpy-int", "big-ints"])
def test_an_element_replaced_by_an_equal_but_different_one_is_computed_for_itself(
        flow, before, after):
    @flow.node(map="items")
    def described(items):
        return _described(items)

    flow.get("described", items=[before, "other"])  # the manifest now holds `before`
    assert flow.get("described", items=[after, "other"]) == [_described(after), "str:'other'"]


@pytest.mark.parametrize("changed", [
    [float(i) for i in range(100)], [True, *range(1, 100)], [*range(99), 2**70],
    [*range(99), np.int64(99)]], ids=["floats", "a-bool", "a-big-int", "a-numpy-int"])
def test_a_flat_list_of_ints_and_its_equal_other_kinds_never_share_results(flow, changed):
    @flow.node(map="items")
    def described(items):
        return _described(items)

    flow.get("described", items=list(range(100)))
    assert flow.get("described", items=changed) == [_described(x) for x in changed]


def test_an_element_mutated_in_place_between_requests_is_computed_again(flow):
    @flow.node(map="items")
    def total(items):
        return sum(items)

    rows = [[1], [2]]
    flow.get("total", items=rows)
    rows[0].append(5)
    assert flow.get("total", items=rows) == [6, 2]


def test_a_change_deep_in_a_million_elements_is_found_and_computed_alone(flow):
    @flow.node(map="items")
    def plus_one(items):
        return items + 1

    items = list(range(1_000_000))
    flow.get("plus_one", items=items)
    items[700_000] = -5
    run = flow.run("plus_one", items=items)
    assert run.values["plus_one"][700_000] == -4
    assert run.nodes["plus_one"].reason.endswith("1 of 1000000 elements to compute")


# --------------------------------------------------------------------------- processes, remotes


_CHILD = """
    import json, sys
    import lazyflow as lf

    flow = lf.Flow("maps", cache=lf.Cache(memory=None, disk=sys.argv[1]))

    @flow.node(map="items")
    def described(items):
        return f"{type(items).__name__}:{items!r}"

    run = flow.run("described", items=json.loads(sys.argv[2]))
    print(json.dumps([run.values["described"], run.nodes["described"].reason]))
"""


def test_a_fresh_process_computes_an_element_whose_type_changed(tmp_path):
    import json

    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(_CHILD))

    def request(items: str) -> list:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), items],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    request("[1, 2, 3]")
    values, reason = request("[1, true, 3.0]")
    assert values == ["int:1", "bool:True", "float:3.0"]
    assert reason.endswith("2 of 3 elements to compute")


def test_a_colleagues_manifest_for_another_element_function_is_never_served(s3_url,
                                                                            s3_options):
    def team_flow(factor: int) -> lf.Flow:
        flow = lf.Flow("team", cache=lf.Cache(memory=None, disk=None, remote=s3_url,
                                              remote_options=s3_options))
        if factor == 10:
            @flow.node(map="items")
            def scaled(items):
                return items * 10
        else:
            @flow.node(map="items")
            def scaled(items):
                return items * 100
        return flow

    assert team_flow(10).get("scaled", items=[1, 2, 3]) == [10, 20, 30]
    assert team_flow(100).get("scaled", items=[1, 2, 3, 4]) == [100, 200, 300, 400]
