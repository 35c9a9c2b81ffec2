"""Executors give the same results and records as the synchronous reference path."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from chains import define_diamond

import lazyflow as lf


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_every_executor_gives_the_reference_results_and_statuses(executor):
    reference, other = lf.Flow("ref", cache=lf.Cache(disk=None)), \
        lf.Flow("other", cache=lf.Cache(disk=None))
    define_diamond(reference)
    define_diamond(other)
    expected = reference.run("joined")
    got = other.run("joined", executor=executor)
    assert got["joined"] == expected["joined"] == 9
    assert {n: (r.status, r.key) for n, r in got.nodes.items()} == \
        {n: (r.status, r.key) for n, r in expected.nodes.items()}


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_a_node_with_positional_only_parameters_runs_under_every_executor(executor):
    flow = lf.Flow("positional", cache=lf.Cache(disk=None))

    @flow.node
    def raw(n: int):
        return list(range(n))

    @flow.node
    def scaled(raw, factor, /, offset=0):
        return [x * factor + offset for x in raw]

    assert flow.get("scaled", n=3, factor=2, executor=executor) == [0, 2, 4]
    assert flow.get("scaled", n=3, factor=2, offset=1, executor=executor) == [1, 3, 5]
    assert flow.run("scaled", n=3, factor=2, executor=executor).nodes["scaled"].status == "cached"


def test_independent_branches_overlap_under_threads(flow):
    define_diamond(flow, threading.Barrier(2))
    run = flow.run("joined", executor="threads", max_workers=2)
    left, right = run.nodes["left"], run.nodes["right"]
    assert left.started < right.ended and right.started < left.ended


def test_a_node_starts_only_after_its_inputs_finish(flow):
    define_diamond(flow)
    run = flow.run("joined", executor="threads")
    assert run.nodes["joined"].started >= max(run.nodes["left"].ended, run.nodes["right"].ended)


def test_an_unknown_executor_name_lists_the_valid_ones(flow):
    define_diamond(flow)
    with pytest.raises(ValueError, match="unknown executor 'gpu'.*'threads'"):
        flow.run("joined", executor="gpu")


def test_a_submitted_run_can_be_cancelled_and_resumed_without_recomputing(flow, calls):
    started, proceed = threading.Event(), threading.Event()

    @flow.node
    def slow():
        calls["slow"] += 1
        started.set()
        proceed.wait(10)
        return 1

    @flow.node
    def after(slow):
        calls["after"] += 1
        return slow + 1

    handle = flow.submit("after")
    assert started.wait(10)
    handle.cancel("changed my mind")
    proceed.set()
    with pytest.raises(lf.CancelledError, match="changed my mind"):
        handle.result(10)
    assert handle.run.nodes["slow"].status == "completed"
    assert handle.run.nodes["after"].status == "cancelled"
    assert flow.get("after") == 2
    assert calls == {"slow": 1, "after": 1}


def test_a_submitted_run_returns_its_run(flow):
    define_diamond(flow)
    handle = flow.submit("joined", executor="threads")
    assert handle.result(10)["joined"] == 9
    assert handle.done()


@pytest.mark.parametrize("executor", ["sync", "threads", "processes"])
def test_on_error_skip_gives_partial_results_under_every_executor(flow, executor):
    @flow.node(on_error="skip")
    def bad():
        raise RuntimeError("no data")

    @flow.node
    def after(bad):
        return bad

    @flow.node
    def good():
        return 1

    run = flow.run(["after", "good"], executor=executor)
    assert (run.failed, run.skipped, run["good"]) == (["bad"], ["after"], 1)
    assert run.nodes["after"].reason == "upstream 'bad' failed"


def test_a_keyboard_interrupt_in_a_sync_node_cancels_the_run(flow, calls):
    @flow.node
    def first():
        calls["first"] += 1
        return 1

    @flow.node
    def interrupted(first):
        raise KeyboardInterrupt

    @flow.node
    def last(interrupted):
        return interrupted

    with pytest.raises(KeyboardInterrupt):
        flow.run("last")
    run = flow.last_run
    assert run.status == "cancelled"
    assert {n: r.status for n, r in run.nodes.items()} == \
        {"first": "completed", "interrupted": "cancelled", "last": "cancelled"}
    flow.run("first")
    assert calls["first"] == 1


def test_a_kernel_interrupt_during_a_threads_run_cancels_it(flow):
    release, main = threading.Event(), threading.main_thread().ident

    @flow.node
    def stuck():
        signal.pthread_kill(main, signal.SIGINT)  # a kernel interrupt: SIGINT to the main thread
        release.wait(30)
        return 1

    @flow.node
    def after(stuck):
        return stuck

    try:
        with _kernel_interrupts(), pytest.raises(KeyboardInterrupt):
            flow.run("after", executor="threads")
    finally:
        release.set()
    assert flow.last_run.status == "cancelled"
    assert {r.status for r in flow.last_run.nodes.values()} == {"cancelled"}


@contextlib.contextmanager
def _kernel_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a kernel: a process started in the background
    (CI) may have inherited SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _waiting_for_the_run(thread: threading.Thread) -> bool:
    """Whether ``thread`` sleeps (kernel state S) inside the engine's wait for tasks."""
    frame = sys._current_frames().get(thread.ident)
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        state = f.read().rpartition(")")[2].split()[0]
    return frame is not None and state == "S" and (
        frame.f_code.co_filename == lf.engine.__file__ or frame.f_code.co_name == "wait")


def test_an_interrupt_that_lands_on_another_thread_still_cancels_the_run(flow):
    release, finished, released = threading.Event(), threading.Event(), []

    @flow.node
    def stuck():
        for _ in range(10**6):  # bounded: were the engine to wait elsewhere, never hang
            if _waiting_for_the_run(threading.main_thread()):
                break
        # the interrupt's handler is left for the main thread, which is not woken by it:
        # as for a SIGINT that lands on the main thread just before it goes to sleep
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        released.append(release.wait(30))  # False: the run waited for this node to give up
        finished.set()
        return 1

    try:
        with _kernel_interrupts(), pytest.raises(KeyboardInterrupt):
            flow.run("stuck", executor="threads")
    finally:
        release.set()
    assert finished.wait(60)
    assert released == [True]  # the run was cancelled while the node was still running
    assert flow.last_run.nodes["stuck"].status == "cancelled"


@pytest.mark.parametrize("executor", ["sync", "threads"])
def test_a_long_chain_of_large_arrays_holds_only_the_live_ones(executor):
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
    assert flow.get("step19", executor=executor)[0] == 19
    assert max(most) <= 2  # the input being read, and at most one value not yet released


def test_importing_and_running_lazyflow_imports_neither_dask_nor_a_process_pool():
    code = ("import sys, lazyflow as lf\n"
            "flow = lf.Flow('f', cache=lf.Cache(disk=None))\n"
            "flow.node(lambda: 1, name='one')\n"
            "flow.get('one', executor='threads')\n"
            "print(sorted(m for m in ('dask', 'distributed', 'lazyflow.executors.processes')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]"
