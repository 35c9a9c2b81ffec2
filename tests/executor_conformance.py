"""What every executor must do as the synchronous reference path does.

Each executor's test class inherits :class:`ExecutorConformance` and declares
its name and what it can do (as dask's ``GetFunctionTestMixin`` is inherited
by every scheduler's tests)::

    class TestThreadExecutor(ExecutorConformance):
        executor = "threads"

A capability an executor has is declared on its class (``stops_running_nodes
= True``) or by inheriting the suite that tests it (:class:`ConcurrentConformance`,
:class:`InProcessConformance`), never special-cased by executor name in a test,
and no test is skipped for an executor it does not apply to. Nodes keep their
state where every executor can reach it: call counts in the file-backed
``ledger``, rendezvous through named pipes and file locks (``meeting``,
``gates.py``), so the same test runs in threads, worker processes and on a
cluster.
"""

from __future__ import annotations

import os
import weakref
from typing import ClassVar

import numpy as np
import psutil
import pytest
from chains import define_diamond
from gates import Gate, announce, wait_at

import lazyflow as lf


def records(run: lf.Run) -> dict[str, tuple[str, str | None, str | None]]:
    """What a run did to each node, as every executor must report it: status, key, digest."""
    return {name: (r.status, r.key, r.digest) for name, r in run.nodes.items()}


class ExecutorConformance:
    """The behaviours every executor shares; subclasses set ``executor`` and capabilities."""

    executor: ClassVar[str]
    """The name given to ``executor=``."""
    in_process: ClassVar[bool] = False
    """Nodes run in the requesting process, so they can share Python objects with it."""
    inline: ClassVar[bool] = False
    """Nodes run one at a time in the run's own thread: a cancelled run lets the node
    that is running finish (and keeps its value)."""
    stops_running_nodes: ClassVar[bool] = False
    """A node past its timeout, or running when its run is cancelled, is stopped (its
    worker killed); otherwise it is abandoned, may still be running, and a warning says so."""
    timeout: ClassVar[float] = 0.2
    """A ``timeout=`` this executor can give a stuck node: longer where its clock starts
    before the node does (Dask counts from submission)."""

    # ------------------------------------------------------------------ results and records

    def test_the_results_and_records_match_the_synchronous_reference_path(self):
        reference = define_diamond(lf.Flow("diamond", cache=lf.Cache(disk=None)))
        other = define_diamond(lf.Flow("diamond", cache=lf.Cache(disk=None)))
        expected = reference.run("joined", executor="sync")
        got = other.run("joined", executor=self.executor)
        assert got["joined"] == expected["joined"] == 9
        assert records(got) == records(expected)
        assert got.executor == self.executor

    def test_a_repeated_request_is_served_from_the_cache_without_running_anything(
            self, flow, ledger):
        @flow.node
        def source():
            ledger.note("source")
            return 2

        @flow.node
        def doubled(source):
            ledger.note("doubled")
            return source * 2

        first = flow.run("doubled", executor=self.executor)
        again = flow.run("doubled", executor=self.executor)
        assert again["doubled"] == first["doubled"] == 4
        assert {n: r.status for n, r in again.nodes.items()} == {"doubled": "cached"}
        assert ledger.count("source") == ledger.count("doubled") == 1

    def test_a_node_with_positional_only_parameters_gets_its_arguments(self, flow):
        @flow.node
        def raw(n: int):
            return list(range(n))

        @flow.node
        def scaled(raw, factor, /, offset=0):
            return [x * factor + offset for x in raw]

        assert flow.get("scaled", n=3, factor=2, executor=self.executor) == [0, 2, 4]
        assert flow.get("scaled", n=3, factor=2, offset=1, executor=self.executor) == [1, 3, 5]

    def test_a_node_starts_only_after_its_inputs_finish(self, flow):
        define_diamond(flow)
        run = flow.run("joined", executor=self.executor, max_workers=2)
        nodes = run.nodes
        assert nodes["left"].started >= nodes["source"].ended
        assert nodes["right"].started >= nodes["source"].ended
        assert nodes["joined"].started >= max(nodes["left"].ended, nodes["right"].ended)

    def test_nodes_lazy_calls_and_mapped_elements_run_where_the_executor_says(self, flow):
        @flow.node
        def plain():
            return os.getpid()

        @flow.node
        def lazy(plain: lf.Lazy[int]):
            return [os.getpid(), plain()]

        @flow.node
        def items():
            return [1, 2]

        @flow.node(map="items")
        def mapped(items):
            return os.getpid()

        run = flow.run(["lazy", "mapped"], executor=self.executor)
        pids = {*run["lazy"], *run["mapped"]}
        if self.in_process:
            assert pids == {os.getpid()}
        else:
            assert os.getpid() not in pids

    def test_registered_hashers_give_the_digests_of_the_requesting_process(self, flow):
        class Point:
            def __init__(self, x):
                self.x = x

        lf.register_hasher(Point, lambda p: p.x)

        @flow.node
        def point():
            return Point(1)

        run = flow.run("point", executor=self.executor)
        assert run.nodes["point"].digest == lf.hash_value(Point(1))

    def test_a_submitted_run_returns_its_run(self, flow):
        define_diamond(flow)
        handle = flow.submit("joined", executor=self.executor)
        assert handle.result(60)["joined"] == 9
        assert handle.done()

    # ------------------------------------------------------------------ errors and policies

    def test_a_node_error_keeps_its_type_and_a_note_names_the_node_and_its_requester(
            self, flow):
        @flow.node
        def rows():
            return [1]

        @flow.node
        def broken(rows):
            raise LookupError("no such row")

        @flow.node
        def report(broken):
            return broken

        with pytest.raises(LookupError, match="no such row") as caught:
            flow.get("report", executor=self.executor)
        notes = "\n".join(caught.value.__notes__)
        assert "node 'broken'" in notes and "report" in notes

    def test_nodes_that_finished_before_an_error_stay_cached(self, flow, ledger):
        @flow.node
        def rows():
            ledger.note("rows")
            return [1]

        @flow.node
        def broken(rows):
            raise LookupError("no such row")

        with pytest.raises(LookupError):
            flow.get("broken", executor=self.executor)
        assert flow.run("rows", executor=self.executor).nodes["rows"].status == "cached"
        assert ledger.count("rows") == 1

    def test_a_flaky_node_is_retried_until_it_succeeds_and_its_attempts_are_counted(
            self, flow, ledger):
        @flow.node(retries=3, retry_delay=0)
        def flaky():
            ledger.note("flaky")
            if ledger.count("flaky") < 3:
                raise ConnectionError("glitch")
            return "ok"

        run = flow.run("flaky", executor=self.executor)
        assert run["flaky"] == "ok"
        assert run.nodes["flaky"].attempts == ledger.count("flaky") == 3

    def test_on_error_skip_gives_partial_results(self, flow):
        @flow.node(on_error="skip")
        def bad():
            raise RuntimeError("no data")

        @flow.node
        def after(bad):
            return bad

        @flow.node
        def good():
            return 1

        run = flow.run(["after", "good"], executor=self.executor)
        assert (run.failed, run.skipped, run["good"]) == (["bad"], ["after"], 1)
        assert run.nodes["after"].reason == "upstream 'bad' failed"

    def test_a_node_past_its_timeout_fails_with_node_timeout_naming_it(self, flow, tmp_path):
        pid_file = str(tmp_path / "pid")
        with Gate(tmp_path / "gate") as gate:
            path = gate.path

            @flow.node(timeout=self.timeout)
            def stuck():
                with open(pid_file, "w") as f:
                    f.write(str(os.getpid()))
                wait_at(path)
                return 1

            if self.stops_running_nodes:
                with pytest.raises(lf.NodeTimeout, match="node 'stuck' did not finish") as caught:
                    flow.get("stuck", executor=self.executor)
                assert "may still be running" not in str(caught.value)
            else:
                with pytest.warns(lf.LazyflowWarning, match="may still be running"), \
                        pytest.raises(lf.NodeTimeout, match="node 'stuck' did not finish"):
                    flow.get("stuck", executor=self.executor)
        assert flow.last_run.nodes["stuck"].status == "failed"
        if self.stops_running_nodes:
            with open(pid_file) as f:
                assert not psutil.pid_exists(int(f.read()))

    # ------------------------------------------------------------------ cancellation

    def test_a_cancelled_run_keeps_finished_nodes_and_a_resumed_one_does_not_recompute_them(
            self, flow, ledger, tmp_path):
        fifo = str(tmp_path / "started")
        os.mkfifo(fifo)
        with Gate(tmp_path / "gate") as gate:
            path = gate.path

            @flow.node
            def first():
                ledger.note("first")
                return 1

            @flow.node
            def slow(first):
                ledger.note("slow")
                if ledger.count("slow") == 1:  # the first call, which the run cancels
                    announce(fifo)
                    wait_at(path)
                return first + 1

            @flow.node
            def after(slow):
                return slow + 1

            handle = flow.submit("after", executor=self.executor)
            with open(fifo) as f:  # returns once 'slow' is running
                pid = int(f.read())
            handle.cancel("changed my mind")
            if self.inline:
                gate.open()  # the run waits for the node running in its own thread
            with pytest.raises(lf.CancelledError, match="changed my mind"):
                handle.result(60)
        statuses = {n: r.status for n, r in handle.run.nodes.items()}
        assert statuses == {"first": "completed",
                            "slow": "completed" if self.inline else "cancelled",
                            "after": "cancelled"}
        if self.stops_running_nodes:
            assert not psutil.pid_exists(pid)
        assert flow.get("after", executor=self.executor) == 3
        assert ledger.count("first") == 1
        assert ledger.count("slow") == (1 if self.inline else 2)

    # ------------------------------------------------------------------ lazy inputs and map

    def test_a_lazy_input_runs_only_when_the_node_calls_it(self, flow, ledger):
        @flow.node
        def cheap():
            ledger.note("cheap")
            return 1

        @flow.node
        def expensive():
            ledger.note("expensive")
            return 2

        @flow.node
        def pick(cheap: lf.Lazy[int], expensive: lf.Lazy[int], thorough: bool = False):
            return expensive() if thorough else cheap()

        assert flow.get("pick", executor=self.executor) == 1
        assert ledger.count("expensive") == 0
        assert flow.get("pick", thorough=True, executor=self.executor) == 2
        assert ledger.count("expensive") == ledger.count("cheap") == 1

    def test_a_mapped_node_runs_once_per_element_and_keeps_their_order(self, flow, ledger):
        @flow.node
        def items(n: int):
            return list(range(n))

        @flow.node(map="items")
        def squared(items):
            ledger.note(f"squared {items}")
            return items**2

        assert flow.get("squared", n=4, executor=self.executor) == [0, 1, 4, 9]
        assert flow.get("squared", n=5, executor=self.executor) == [0, 1, 4, 9, 16]
        assert [ledger.count(f"squared {i}") for i in range(5)] == [1, 1, 1, 1, 1]

    # ------------------------------------------------------------------ memory


class ConcurrentConformance(ExecutorConformance):
    """What executors that run several nodes at once add (all but ``sync``)."""

    def test_independent_branches_run_at_the_same_time(self, flow, meeting):
        @flow.node
        def left():
            meeting("left")  # returns only once 'right' is running too
            return 1

        @flow.node
        def right():
            meeting("right")
            return 2

        run = flow.run(["left", "right"], executor=self.executor, max_workers=2)
        a, b = run.nodes["left"], run.nodes["right"]
        assert a.started < b.ended and b.started < a.ended


class InProcessConformance(ExecutorConformance):
    """What executors that hold values in this process add (``sync``, ``threads``)."""

    def test_a_long_chain_of_large_arrays_holds_only_the_live_ones(self):
        flow = lf.Flow("chain", cache=lf.Cache(memory=None, disk=None))
        alive: set[int] = set()
        most = []

        def make(i: int):
            def step(previous):
                most.append(len(alive))
                array = previous + 1
                alive.add(i)
                weakref.finalize(array, alive.discard, i)
                return array
            return step

        @flow.node
        def step0():
            array = np.zeros(1_000_000)
            alive.add(0)
            weakref.finalize(array, alive.discard, 0)
            return array

        for i in range(1, 20):
            flow.node(name=f"step{i}", inputs={"previous": f"step{i - 1}"})(make(i))
        assert flow.get("step19", executor=self.executor)[0] == 19
        assert max(most) <= 2  # the input being read, and at most one value not yet released
