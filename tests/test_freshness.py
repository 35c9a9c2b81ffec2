"""``max_age=``: a stored value older than its node's max_age is a miss, on every tier."""

from __future__ import annotations

import datetime

import pytest

import lazyflow as lf
from lazyflow.engine.freshness import SKEW


@pytest.fixture
def prices():
    """What the "market" returns: tests change it between requests."""
    return {"AAPL": 100.0}


@pytest.fixture
def market(flow, calls, prices):
    @flow.node(max_age="1h")
    def quotes():
        calls["quotes"] += 1
        return dict(prices)

    @flow.node
    def report(quotes):
        calls["report"] += 1
        return f"AAPL at {quotes['AAPL']}"

    return flow


def test_an_entry_younger_than_max_age_is_a_hit(market, calls, clock):
    market.get("report")
    clock.advance(59 * 60)
    assert market.run("report").nodes["report"].status == "cached"
    assert calls == {"quotes": 1, "report": 1}


def test_an_entry_older_than_max_age_is_computed_again(market, calls, clock):
    market.get("quotes")
    clock.advance(2 * 3600)
    run = market.run("quotes")
    assert run.nodes["quotes"].status == "completed"
    assert run.nodes["quotes"].reason == "expired (age 2h > max_age 1h)"
    assert calls["quotes"] == 2


def test_explain_says_an_entry_expired_and_by_how_much(market, clock):
    market.get("quotes")
    clock.advance(3 * 3600)
    row = market.explain("quotes").rows[0]
    assert (row.action, row.reason) == ("run", "expired (age 3h > max_age 1h)")


def test_a_stale_ancestor_does_not_hide_behind_a_cached_target(market, calls, prices, clock):
    market.get("report")
    clock.advance(2 * 3600)
    prices["AAPL"] = 120.0
    assert market.get("report") == "AAPL at 120.0"
    assert calls == {"quotes": 2, "report": 2}


def test_explain_says_a_cached_target_is_stale_through_its_input(market, clock):
    market.get("report")
    clock.advance(2 * 3600)
    rows = {row.node: row for row in market.explain("report").rows}
    assert rows["quotes"].reason == "expired (age 2h > max_age 1h)"
    assert rows["report"].reason.startswith("expired (an input's max_age ran out")


def test_a_repulled_input_that_comes_out_equal_leaves_its_dependents_cached(market, calls,
                                                                            clock):
    market.get("report")
    clock.advance(2 * 3600)
    run = market.run("report")
    assert run.nodes["quotes"].status == "completed"
    assert run.nodes["report"].status == "cached"  # early cutoff: same quotes, same key
    clock.advance(30 * 60)  # the trace record now carries the re-pulled quotes' expiry
    again = market.run("report")
    assert again.nodes["report"].status == "cached" and "quotes" not in again.nodes
    assert calls == {"quotes": 2, "report": 1}


def test_the_repulled_value_restarts_the_targets_clock(market, calls, clock):
    market.get("report")
    clock.advance(2 * 3600)
    market.get("report")  # quotes pulled again at t = 2h
    clock.advance(30 * 60)  # 2.5h after the first pull, 0.5h after the second
    assert market.run("report").nodes["report"].status == "cached"
    assert calls["quotes"] == 2


def test_age_counts_from_when_the_value_was_computed_not_when_it_was_promoted(
        tmp_path, calls, clock):
    def build() -> lf.Flow:
        flow = lf.Flow("ages", cache=lf.Cache(disk=str(tmp_path / "cache")))

        @flow.node(max_age=3600)
        def quotes():
            calls["quotes"] += 1
            return 1

        return flow

    build().get("quotes")
    clock.advance(50 * 60)
    reader = build()  # a fresh memory tier: the disk entry is promoted into it
    assert reader.run("quotes").nodes["quotes"].tier == "disk"
    clock.advance(20 * 60)  # 70 min after computing, 20 after promotion
    assert reader.run("quotes").nodes["quotes"].status == "completed"
    assert calls["quotes"] == 2


def test_a_colleagues_remote_entry_ages_from_when_the_colleague_computed_it(
        s3_url, s3_options, calls, clock):
    def build() -> lf.Flow:
        flow = lf.Flow("team", cache=lf.Cache(disk=None, remote=s3_url,
                                              remote_options=s3_options))

        @flow.node(max_age="1h")
        def quotes():
            calls["quotes"] += 1
            return 1

        return flow

    build().get("quotes")
    clock.advance(30 * 60)
    assert build().run("quotes").nodes["quotes"].tier == "remote"
    clock.advance(45 * 60)
    assert build().run("quotes").nodes["quotes"].status == "completed"
    assert calls["quotes"] == 2


def test_an_entry_stamped_in_the_future_beyond_the_skew_counts_as_expired(market, calls,
                                                                          clock):
    market.get("quotes")
    clock.advance(-(SKEW + 60))  # this machine's clock is now far behind the writer's
    assert market.run("quotes").nodes["quotes"].reason.startswith("expired (computed")
    assert calls["quotes"] == 2


def test_an_entry_stamped_slightly_in_the_future_is_trusted(market, calls, clock):
    market.get("quotes")
    clock.advance(-60)
    assert market.run("quotes").nodes["quotes"].status == "cached"


def test_a_map_nodes_elements_expire_with_it(flow, calls, clock):
    @flow.node(map="items", max_age="10m")
    def fetch(items):
        calls["fetch"] += 1
        return items * 2

    flow.get("fetch", items=[1, 2, 3])
    clock.advance(11 * 60)
    assert flow.get("fetch", items=[1, 2, 3]) == [2, 4, 6]
    assert calls["fetch"] == 6


@pytest.mark.parametrize(("given", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("45s", 45.0), ("30m", 1800.0), ("1h", 3600.0), ("2d", 172800.0),
    (" 1.5H ", 5400.0), ("120", 120.0), (datetime.timedelta(minutes=5), 300.0)])
def test_max_age_takes_seconds_strings_and_timedeltas(flow, given, seconds):
    @flow.node(max_age=given)
    def quotes():
        return 1

    assert flow["quotes"].options.max_age == seconds


@pytest.mark.parametrize("given", ["soon", "1w", 0, -5, True, "h"])
def test_a_max_age_that_is_not_a_positive_duration_is_refused(flow, given):
    with pytest.raises(lf.DefinitionError, match="node 'quotes': max_age= takes"):
        @flow.node(max_age=given)
        def quotes():
            return 1


def test_explain_spells_an_age_precisely_enough_to_read_as_over_the_limit(flow, clock):
    @flow.node(max_age=1.5)
    def quotes():
        return 1

    flow.get("quotes")
    clock.advance(1.6)
    assert flow.explain("quotes").rows[0].reason == "expired (age 1.6s > max_age 1.5s)"
