"""Single-flight: concurrent requests for one uncached value compute it once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import lazyflow as lf
from lazyflow.cache.flights import FLIGHTS, Flights

_PATIENCE = 60  # seconds: only a broken implementation ever waits this long


class Overlap:
    """What overlapping requests share with their node: a call counter and the node's key.

    Hashes to a constant, so a node reading it keeps its key while the test changes it.
    """

    def __init__(self) -> None:
        self.calls = 0
        self.key = ""
        self.release = threading.Event()
        self._lock = threading.Lock()

    def call(self) -> int:
        """Count one call of the node; return its number (1 for the first)."""
        with self._lock:
            self.calls += 1
            return self.calls

    def await_waiting(self, count: int) -> None:
        """Return once ``count`` requests wait for this node's key."""
        assert FLIGHTS.await_waiting(self.key, count, timeout=_PATIENCE), \
            f"{count} requests never waited for the node"


lf.register_hasher(Overlap, lambda overlap: "overlap")


def _together(requests: list[Callable[[], Any]]) -> list[Any]:
    """Make each request from a thread of its own, all at once; their results (or errors)."""
    results: list[Any] = [None] * len(requests)

    def one(index: int) -> None:
        try:
            results[index] = requests[index]()
        except Exception as e:
            results[index] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _keyed(flow: lf.Flow, overlap: Overlap, target: str = "x") -> None:
    overlap.key = flow.explain(target)[target].key


def test_eight_threads_asking_for_one_uncached_node_compute_it_once(flow):
    overlap = Overlap()

    @flow.node
    def x():
        if overlap.call() == 1:  # the leader answers once the seven others wait for it
            overlap.await_waiting(7)
        return 42

    _keyed(flow, overlap)
    runs = _together([lambda: flow.run("x")] * 8)
    assert overlap.calls == 1
    assert [run["x"] for run in runs] == [42] * 8
    assert sorted(run.nodes["x"].status for run in runs) == ["cached"] * 7 + ["completed"]
    waited = next(run for run in runs if run.nodes["x"].status == "cached")
    assert waited.nodes["x"].tier == "memory"
    assert waited.nodes["x"].reason == "computed meanwhile by another request"


def test_flows_sharing_a_cache_compute_a_node_once(flow):
    overlap = Overlap()
    flows = [lf.Flow(f"copy{i}", cache=flow.cache) for i in range(8)]
    for copy in flows:
        @copy.node
        def x():
            if overlap.call() == 1:
                overlap.await_waiting(7)
            return 42

    _keyed(flows[0], overlap)
    assert _together([lambda copy=copy: copy.get("x") for copy in flows]) == [42] * 8
    assert overlap.calls == 1


def test_when_the_leader_fails_one_waiter_computes_and_the_others_take_its_value(flow):
    overlap = Overlap()

    @flow.node
    def x():
        call = overlap.call()
        if call == 1:
            overlap.await_waiting(7)
            raise RuntimeError("the leader failed")
        overlap.await_waiting(6)  # the one that took over: the six others wait for it
        return 42

    _keyed(flow, overlap)
    results = _together([lambda: flow.get("x")] * 8)
    assert sorted(map(repr, results)) == ["42"] * 7 + [repr(RuntimeError("the leader failed"))]
    assert overlap.calls == 2


def test_when_the_leader_is_cancelled_a_waiter_computes(flow):
    overlap = Overlap()
    token = lf.CancelToken()

    @flow.node
    def x():
        if overlap.call() == 1:
            overlap.await_waiting(1)
            token.cancel("the leader gave up")
            overlap.release.wait(_PATIENCE)  # its run moves on without it
        return 42

    _keyed(flow, overlap)
    cancelled: list[BaseException] = []

    def lead() -> None:
        try:
            flow.run("x", executor="threads", cancel=token)
        except lf.CancelledError as e:
            cancelled.append(e)

    leader = threading.Thread(target=lead)
    leader.start()
    try:
        assert FLIGHTS.await_waiting(overlap.key, 0, timeout=_PATIENCE)  # x is in flight
        waiter = flow.run("x")
    finally:
        overlap.release.set()
        leader.join()
    assert (waiter["x"], waiter.nodes["x"].status, overlap.calls) == (42, "completed", 2)
    assert len(cancelled) == 1


def test_requests_for_different_keys_do_not_wait_for_each_other(flow):
    both_inside = threading.Barrier(2, timeout=_PATIENCE)

    @flow.node
    def x(n: int):
        both_inside.wait()  # broken (an error) unless both keys are computed at once
        return n

    assert _together([lambda: flow.get("x", n=1), lambda: flow.get("x", n=2)]) == [1, 2]


def test_two_nodes_of_one_run_with_one_key_compute_it_once_under_threads(flow):
    overlap = Overlap()

    def twin():
        if overlap.call() == 1:
            overlap.await_waiting(1)  # its twin, in this very run, waits for it
        return 42

    flow.node(name="a1")(twin)
    flow.node(name="a2")(twin)

    @flow.node
    def both(a1, a2):
        return a1 + a2

    _keyed(flow, overlap, "a1")
    run = flow.run("both", executor="threads", max_workers=2)
    assert (run["both"], overlap.calls) == (84, 1)
    reference = lf.Flow("reference", cache=lf.Cache(disk=None))
    reference.node(name="a1")(twin)
    reference.node(name="a2")(twin)
    reference.node(name="both")(both)
    expected = reference.run("both")
    assert {n: r.status for n, r in run.nodes.items()} == \
        {n: r.status for n, r in expected.nodes.items()} == \
        {"a1": "completed", "a2": "cached", "both": "completed"}


def test_a_request_on_a_thread_running_an_event_loop_computes_rather_than_waits(flow):
    overlap = Overlap()
    inside = threading.Event()

    @flow.node
    def x():
        if overlap.call() == 1:
            inside.set()
            overlap.release.wait(_PATIENCE)
        return 42

    leader = threading.Thread(target=flow.get, args=("x",))
    leader.start()
    try:
        assert inside.wait(_PATIENCE)

        async def in_a_cell() -> lf.Run:
            return flow.run("x")  # a notebook cell: its thread runs the kernel's event loop

        run = asyncio.run(in_a_cell())
    finally:
        overlap.release.set()
        leader.join()
    assert (run["x"], run.nodes["x"].status, overlap.calls) == (42, "completed", 2)


def test_a_landed_key_wakes_each_waiter_once():
    flights, woken = Flights(), []
    leader, someone_else = object(), object()
    assert flights.claim("k", leader, wake=lambda: woken.append("leader"))
    assert not flights.claim("k", object(), wake=lambda: woken.append("a"))
    assert not flights.claim("k", object(), wake=lambda: woken.append("b"))
    flights.land("k", someone_else)  # only the leader lands its key
    assert (woken, flights.waiting("k")) == ([], 2)
    flights.land("k", leader)
    assert (woken, flights.waiting("k")) == (["a", "b"], 0)
    assert flights.lead("k", someone_else)  # free again: the next claim leads


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore::lazyflow.errors.CacheWarning")  # the deepest levels warn
def test_a_node_that_asks_for_itself_ends_in_a_recursion_error_not_a_hang():
    flow = lf.Flow("self-asking", cache=lf.Cache(disk=None))

    @flow.node
    def loop():
        return flow.get("loop")

    with pytest.raises(RecursionError):
        flow.get("loop")
