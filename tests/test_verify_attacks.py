"""An outside suite against what verify and lineage claim about a cached value.

A stored value is the *reference*: verify must say "reproduced" only when recomputing
gives that very value, and lineage must name what that value was computed from, also
after an ancestor's entry was evicted or computed again to another value.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from chains import define_list_chain

import lazyflow as lf


def _sampled(flow: lf.Flow) -> None:
    """``draw`` is unseeded but not declared ``deterministic=False``: it does not reproduce."""

    @flow.node
    def draw():
        return random.random()

    @flow.node
    def doubled(draw):
        return draw * 2


def _forget(flow: lf.Flow, node: str) -> None:
    """Evict ``node``'s entry from every tier, as a full cache would."""
    flow.cache.delete(flow.explain(node)[node].key)


# --------------------------------------------------------------------------- verify


def test_verify_does_not_call_a_value_reproduced_when_an_evicted_ancestor_does_not_reproduce(
        flow):
    _sampled(flow)
    flow.get("doubled")
    _forget(flow, "draw")
    result = flow.verify("doubled")
    assert not result.ok
    assert result["draw"].status == "differs"
    assert result["doubled"].status == "inputs differ"
    assert "NOT reproduced" in str(result)


def test_verify_compares_an_ancestor_with_the_value_its_dependent_was_computed_from(
        flow, tmp_path):
    # 'count' reads a file it does not declare: deterministic now, but its entry was
    # computed again (after an eviction) from other file content than 'doubled' was
    source = tmp_path / "count.txt"
    source.write_text("1")
    where = str(source)

    @flow.node
    def count():
        return int(Path(where).read_text())

    @flow.node
    def doubled(count):
        return count * 2

    assert flow.get("doubled") == 2
    _forget(flow, "count")
    source.write_text("5")
    assert flow.get("count") == 5 and flow.get("doubled") == 2
    result = flow.verify("doubled")
    assert not result.ok
    assert result["count"].status == "differs"
    assert result["count"].expected == lf.hash_value(1)


def test_verify_still_passes_a_deterministic_flow_whose_ancestors_were_evicted(flow):
    define_list_chain(flow)
    flow.get("total", n=4)
    flow.cache.delete(flow.explain("raw", n=4)["raw"].key)
    result = flow.verify("total", n=4)
    assert result.ok
    assert [c.status for c in result.checks] == ["same", "same"]


def test_verify_of_a_value_nothing_stored_does_not_say_reproduced(flow):
    @flow.node(cache=False)
    def report(n: int):
        return f"n is {n}"

    result = flow.verify("report", n=3)
    assert result.ok and result["report"].status == "unverified"
    assert "nothing stored to compare it with" in str(result)


@pytest.mark.parametrize("stored, recomputed", [
    (0.0, -0.0), (1, 1.0), (1, True), ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
    (sum([0.1] * 10 + [1e16, -1e16]), sum([1e16, -1e16] + [0.1] * 10)),
], ids=["negative zero", "int and float", "int and bool", "dict order", "float sum order"])
def test_verify_compares_digests_so_values_that_merely_compare_equal_differ(
        flow, calls, stored, recomputed):
    @flow.node
    def value():
        calls["value"] += 1  # the counter hashes alike: the key does not see the call
        return stored if calls["value"] == 1 else recomputed

    flow.get("value")
    assert flow.verify("value")["value"].status == "differs"


# --------------------------------------------------------------------------- lineage


def test_lineage_names_the_digest_a_value_was_computed_from_not_a_newer_entry(flow):
    _sampled(flow)
    computed_from = lf.hash_value(flow.get("draw"))
    flow.get("doubled")
    _forget(flow, "draw")
    newer = lf.hash_value(flow.get("draw"))
    draw = flow.lineage("doubled")["draw"]
    assert draw.digest == computed_from
    assert draw.replaced_by == newer
    assert "since replaced by another value" in str(draw)
    assert flow.lineage("draw").replaced_by is None  # the newer value's own lineage


def test_lineage_of_an_entry_not_replaced_says_nothing_of_it(flow):
    _sampled(flow)
    flow.get("doubled")
    tree = flow.lineage("doubled")
    assert tree["draw"].replaced_by is None
    assert tree.to_dict()["inputs"]["draw"]["replaced_by"] is None


def test_verify_does_not_call_a_flow_run_as_a_node_same_when_its_flow_served_it_cached(flow):
    inner = lf.Flow("inner", cache=lf.Cache(disk=None))
    _sampled(inner)
    flow.add(inner.as_node("doubled", name="prepared"))

    @flow.node
    def total(prepared):
        return prepared + 1

    flow.get("total")
    check = flow.verify("total")["prepared"]
    assert (check.status, "inner.verify('doubled')" in check.reason) == ("unverified", True)
