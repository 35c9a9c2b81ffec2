"""Requests: laziness, exact execution counts, early cutoff, errors, records."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import lazyflow as lf
from lazyflow.engine import VANISHED


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

    with pytest.warns(lf.DefinitionWarning):  # defined at another line than _chain's
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

    with pytest.warns(lf.DefinitionWarning):
        @flow.node
        def step(raw):  # noqa: F811 - a fixed definition
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

    with pytest.warns(lf.DefinitionWarning):
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


_EVENTS_BUILT = """
import sys
import lazyflow as lf
from lazyflow.engine import events
from chains import define_list_chain

built = []
for kind in (events.RunStarted, events.NodeStarted, events.NodeFinished, events.RunFinished):
    init = kind.__init__
    kind.__init__ = lambda self, *a, _init=init, **k: built.append(self) or _init(self, *a, **k)

flow = define_list_chain(lf.Flow("quiet", cache=lf.Cache(disk=None)))
flow.get("total", n=3)
unobserved = len(built)
flow.events.subscribe(lambda event: None, nodes=sys.argv[1] == "nodes")
flow.get("total", n=4)
print(unobserved, len(built) - unobserved)
"""


def _events_built(tmp_path, listener_takes: str) -> list[str]:
    """Event objects a fresh process builds for a run nobody listens to, then for one whose
    listener takes ``"nodes"`` (every event) or ``"runs"`` only."""
    env = {**os.environ, "LAZYFLOW_HISTORY": "off",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _EVENTS_BUILT, listener_takes],
                         capture_output=True, text=True, check=True, cwd=tmp_path, env=env)
    return out.stdout.split()


def test_a_run_nobody_listens_to_builds_no_event_objects(tmp_path):
    assert _events_built(tmp_path, "nodes") == ["0", "6"]  # and six once someone listens


def test_a_run_whose_listeners_take_run_events_only_builds_no_node_events(tmp_path):
    assert _events_built(tmp_path, "runs") == ["0", "2"]  # RunStarted and RunFinished


def test_a_listener_of_run_events_only_gets_no_node_event_another_listener_asked_for(flow,
                                                                                     calls):
    _chain(flow, calls)
    runs_only, every = [], []
    flow.events.subscribe(lambda e: runs_only.append(type(e).__name__), nodes=False)
    flow.events.subscribe(lambda e: every.append(type(e).__name__))
    flow.get("total", n=2)
    assert runs_only == ["RunStarted", "RunFinished"]
    assert every == ["RunStarted", "NodeStarted", "NodeFinished", "NodeStarted", "NodeFinished",
                     "RunFinished"]


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


# --------------------------------------------------------------------------- entries that vanish


def _scaled_chain(flow: lf.Flow, ledger) -> None:
    @flow.node
    def raw(n: int):
        ledger.note("raw")
        return list(range(n))

    @flow.node
    def total(raw, scale: int):
        ledger.note("total")
        return sum(raw) * scale


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_an_entry_lost_between_lookup_and_read_is_computed_again_in_the_same_run(
        losing, ledger, executor):
    flow, tier = losing
    _scaled_chain(flow, ledger)
    flow.get("total", n=4, scale=1)
    tier.lose(flow.last_run.nodes["raw"].key)
    with pytest.warns(lf.CacheWarning, match="vanished"):
        run = flow.run("total", n=4, scale=2, executor=executor)
    assert run["total"] == 12
    assert (ledger.count("raw"), ledger.count("total")) == (2, 2)
    assert flow.last_run is run
    assert {n: (r.status, r.reason) for n, r in run.nodes.items() if n == "raw"} == {
        "raw": ("completed", VANISHED)}
    assert run.nodes["total"].status == "completed"


def test_an_entry_computed_again_makes_no_run_events_or_history_of_its_own(losing, ledger):
    flow, tier = losing
    _scaled_chain(flow, ledger)
    flow.get("total", n=4, scale=1)
    tier.lose(flow.last_run.nodes["total"].key)
    seen = []
    flow.events.subscribe(lambda event: seen.append(type(event).__name__))
    with pytest.warns(lf.CacheWarning):
        run = flow.run("total", n=4, scale=1)
    assert seen.count("RunStarted") == seen.count("RunFinished") == 1
    runs = lf.history(flow, limit=None)
    assert len(runs) == 2 and runs[0].id == run.id
    # raw joined the run when total's entry vanished: its row is there too
    assert {n.name: n.status for n in runs[0].nodes} == {"total": "completed", "raw": "cached"}


def test_a_damaged_entry_is_computed_again_with_its_own_parameters(losing, ledger):
    flow, tier = losing

    @flow.node
    def base(n: int = 1):
        return np.full(10, n)

    @flow.node
    def shifted(base, n: int = 2, k: int = 0):  # the same parameter name, another default
        return base + n + k

    flow.get("shifted")
    tier.lose(flow.last_run.nodes["base"].key, how="damage")
    with pytest.warns(lf.CacheWarning) as caught:
        assert flow.get("shifted", k=1).tolist() == [4] * 10
    assert any("checksum" in str(w.message) for w in caught)
    assert flow.get("base").tolist() == [1] * 10  # and the entry stored for it is its own


def test_a_lost_entry_whose_new_value_differs_makes_its_dependents_compute_again(losing,
                                                                                 calls):
    flow, tier = losing

    @flow.node
    def drawn():  # declared deterministic, but each call draws a new value
        calls["drawn"] += 1
        return calls["drawn"]

    @flow.node
    def tagged(drawn, tag: str):
        return 0  # the same value whatever it is given: early cutoff below it

    @flow.node
    def report(drawn, tagged):
        calls["report"] += 1
        return drawn * 10 + tagged

    assert flow.get("report", tag="a") == 10
    tier.lose(flow.last_run.nodes["drawn"].key)
    with pytest.warns(lf.CacheWarning):
        run = flow.run("report", tag="b")
    assert run["report"] == 20  # from the value drawn now, not the entry keyed by the old one
    assert calls == {"drawn": 2, "report": 2}
    assert run.nodes["drawn"].reason.startswith(VANISHED)
    assert "differs" in run.nodes["drawn"].reason
    assert flow.cache.lookup(run.nodes["report"].key)[0]["input_digests"]["drawn"] == \
        run.nodes["drawn"].digest


def test_a_cached_target_whose_entry_is_lost_is_computed_again(losing, ledger):
    flow, tier = losing
    _scaled_chain(flow, ledger)
    flow.get("total", n=4, scale=1)
    tier.lose(flow.last_run.nodes["total"].key)
    with pytest.warns(lf.CacheWarning):
        run = flow.run("total", n=4, scale=1)
    assert run["total"] == 6
    assert {n: r.status for n, r in run.nodes.items()} == {"total": "completed",
                                                           "raw": "cached"}
    assert (ledger.count("raw"), ledger.count("total")) == (1, 2)


def test_a_lazy_input_whose_entry_is_lost_when_called_is_computed_again(losing, ledger):
    flow, tier = losing

    @flow.node
    def data(n: int):
        ledger.note("data")
        return list(range(n))

    @flow.node
    def pick(flag: bool, data: lf.Lazy[list], tag: str = ""):
        return data() if flag else []

    flow.get(["pick", "data"], flag=True, n=3)
    tier.lose(flow.last_run.nodes["data"].key)
    with pytest.warns(lf.CacheWarning):
        run = flow.run(["pick", "data"], flag=True, n=3, tag="again")
    assert run["pick"] == [0, 1, 2]
    assert (run.nodes["data"].status, run.nodes["data"].reason) == ("completed", VANISHED)
    assert ledger.count("data") == 2


def test_a_value_evicted_from_memory_by_a_larger_one_is_computed_again_in_the_run(calls):
    flow = lf.Flow("evicting", cache=lf.Cache(memory=1_000_000, disk=None))

    @flow.node
    def small():
        calls["small"] += 1
        return np.zeros(1_000)

    @flow.node
    def big(size: int):
        return np.zeros(size)

    @flow.node
    def both(small, big):
        return small.size + big.size

    flow.get("both", size=10)
    with pytest.warns(lf.CacheWarning):  # big's 992 kB push small's 8 kB out of the budget
        run = flow.run("both", size=124_000)
    assert run["both"] == 125_000
    assert (run.nodes["small"].status, run.nodes["small"].reason) == ("completed", VANISHED)
    assert calls["small"] == 2


class Signal:
    """A counter and an event shared by nodes of one test; keys ignore it."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()


lf.register_hasher(Signal, lambda signal: "signal")


def test_a_dependent_running_when_its_input_vanishes_keeps_the_key_it_started_with(losing):
    flow, tier = losing
    signal = Signal()

    @flow.node
    def drawn():  # declared deterministic, but each call draws a new value
        signal.count += 1
        return signal.count

    @flow.node
    def slow(drawn, tag: str):
        signal.event.wait(60)  # still running when drawn's entry vanishes
        return drawn * 100

    @flow.node
    def quick(drawn: lf.Lazy[int], tag: str):
        value = drawn()  # the read that finds drawn's entry gone
        signal.event.set()
        return value

    flow.get(["slow", "quick"], tag="a")
    signal.event.clear()
    old = flow.last_run.nodes["drawn"].digest
    tier.lose(flow.last_run.nodes["drawn"].key, after=1)  # slow reads it; quick does not
    with pytest.warns(lf.CacheWarning):
        run = flow.run(["slow", "quick"], tag="b", executor="threads", max_workers=2)
    assert (run["slow"], run["quick"]) == (100, 2)
    assert run.nodes["drawn"].digest != old
    assert flow.cache.lookup(run.nodes["slow"].key)[0]["input_digests"] == {"drawn": old}


# --------------------------------------------------------------------------- readers' own copies


def _mutating_siblings(flow):
    @flow.node
    def a():
        return [1, 2, 3]

    @flow.node
    def b(a):
        a.append(100)  # changes its input in place
        return len(a)

    @flow.node
    def c(a):
        return len(a)


def test_a_node_changing_its_input_in_place_cannot_change_what_a_sibling_computes(flow):
    _mutating_siblings(flow)
    assert flow.get(["a", "b", "c"]) == {"a": [1, 2, 3], "b": 4, "c": 3}
    assert flow.get("c") == 3  # the cached c is what c computes from a alone


def test_a_sibling_served_from_the_cache_also_gets_its_own_copy(flow):
    _mutating_siblings(flow)
    flow.get("a")
    assert flow.get(["b", "c"]) == {"b": 4, "c": 3}


def test_a_flow_input_passed_to_two_nodes_reaches_each_unchanged_by_the_other(flow):
    @flow.node
    def grows(items):
        items.append(0)
        return len(items)

    @flow.node
    def counts(items):
        return len(items)

    assert flow.get(["grows", "counts"], items=[1, 2]) == {"grows": 3, "counts": 2}


def test_an_input_another_writer_replaces_after_its_lookup_is_computed_again(
        tmp_path, monkeypatch, ledger):
    from lazyflow.cache.disk import DiskTier

    flow = lf.Flow("replaced", cache=lf.Cache(memory=None, disk=str(tmp_path), remote=None))

    @flow.node
    def drawn():  # declared deterministic; a colleague's process drew another value
        ledger.note("drawn")
        return 1

    @flow.node
    def scaled(drawn, factor: int):
        return drawn * factor

    flow.get("scaled", factor=10)
    key = flow.last_run.nodes["drawn"].key
    colleague = DiskTier(str(tmp_path), size_limit=10**9)
    read = DiskTier.entry

    def replaced_then_read(self, wanted):  # after this run looked drawn up and keyed
        if self is not colleague and wanted == key and colleague.meta(key)["digest"] != "2":
            colleague.put(key, 2, {**colleague.meta(key), "digest": "2"})  # scaled by it
            colleague.flush()
        return read(self, wanted)

    monkeypatch.setattr(DiskTier, "entry", replaced_then_read)
    with pytest.warns(lf.CacheWarning, match="drawn"):
        run = flow.run("scaled", factor=100)
    assert run["scaled"] == 100  # computed from drawn's own value, as keyed, not from 2
    assert ledger.count("drawn") == 2
