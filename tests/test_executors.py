"""The in-process executors (sync, threads) conform to the reference path; interrupts and
executor names."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from chains import define_diamond
from executor_conformance import ConcurrentConformance, InProcessConformance

import lazyflow as lf


class TestSyncExecutor(InProcessConformance):
    """The reference path: one node at a time, inline in the run's thread."""

    executor = "sync"
    in_process = True
    inline = True


class TestThreadExecutor(ConcurrentConformance, InProcessConformance):
    """Threads of this process: a running node cannot be stopped, only abandoned."""

    executor = "threads"
    in_process = True


def test_an_unknown_executor_name_lists_the_valid_ones(flow):
    define_diamond(flow)
    with pytest.raises(ValueError, match="unknown executor 'gpu'.*'threads'"):
        flow.run("joined", executor="gpu")


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
        frame.f_code.co_filename == lf.engine.loop.__file__ or frame.f_code.co_name == "wait")


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
