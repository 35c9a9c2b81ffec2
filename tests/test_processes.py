"""The process executor conforms to the reference path; functions travel by value, work
really stops, results arrive once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import psutil
import pytest
from executor_conformance import ConcurrentConformance

import lazyflow as lf
from lazyflow.executors.processes import ProcessExecutor, WorkerLostError


class TestProcessExecutor(ConcurrentConformance):
    """Worker processes of the session's shared pool: a running node is stopped by
    killing its worker."""

    executor = "processes"
    stops_running_nodes = True
    timeout = 1.0  # a worker may take a moment to start reading its task


@pytest.fixture
def pool():
    """A private pool of two workers, shut down after the test."""
    with ProcessExecutor(2) as executor:
        yield executor


def test_closures_and_locally_defined_functions_run_in_worker_processes(flow, pool):
    offset = 10

    @flow.node
    def where():
        return os.getpid()

    @flow.node
    def shifted(where):
        return where + offset

    run = flow.run("shifted", executor=pool)
    assert run["shifted"] - offset != os.getpid()
    assert run["shifted"] - offset in pool.pids()


def test_a_worker_replaces_a_killed_one_for_the_next_node(flow, pool, tmp_path):
    @flow.node(timeout=0.5)
    def stuck():
        signal.pause()

    @flow.node
    def fine():
        return os.getpid()

    with pytest.raises(lf.NodeTimeout):
        flow.get("stuck", executor=pool)
    assert flow.get("fine", executor=pool) in pool.pids()


def test_a_node_error_carries_the_traceback_from_its_worker(flow, pool):
    @flow.node
    def broken():
        raise LookupError("no such row")

    with pytest.raises(LookupError) as caught:
        flow.get("broken", executor=pool)
    notes = "\n".join(caught.value.__notes__)
    assert "traceback in worker process" in notes and ", in broken\n" in notes


def test_a_worker_that_dies_fails_its_node_with_worker_lost_error(flow, pool):
    @flow.node
    def crash():
        os._exit(3)

    with pytest.raises(WorkerLostError, match="node 'crash'.*exit code 3"):
        flow.get("crash", executor=pool)


def test_a_large_array_result_arrives_intact_and_writable(flow, pool):
    @flow.node
    def big():
        return np.arange(2_000_000, dtype=np.float64)

    value = flow.get("big", executor=pool)
    assert value.flags.writeable and value[-1] == 1_999_999
    assert flow.last_run.nodes["big"].digest == lf.hash_value(np.arange(2_000_000, dtype=float))


def test_a_node_that_cannot_be_pickled_says_to_use_threads(flow, pool):
    import threading

    lock = threading.Lock()

    @flow.node(cache=False)
    def locked():
        with lock:
            return 1

    with pytest.raises(TypeError, match="node 'locked' cannot be sent to a worker process"):
        flow.get("locked", executor=pool)


def test_the_processes_name_reuses_one_pool_across_runs(flow):
    @flow.node(cache=False)
    def where():
        return os.getpid()

    first = flow.get("where", executor="processes", max_workers=1)
    assert flow.get("where", executor="processes", max_workers=1) == first


_INTERRUPTED_SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import lazyflow as lf

    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a kernel has, even if started
    flow = lf.Flow("interrupted", cache=lf.Cache(disk=None))     # in the background (SIG_IGN)

    @flow.node
    def first():
        return 1

    @flow.node
    def stuck(first):
        print(os.getpid(), flush=True)      # the test reads this, then interrupts us
        signal.pause()

    if __name__ == "__main__":
        try:
            flow.run("stuck", executor="processes", max_workers=1)
        except KeyboardInterrupt:
            run = flow.last_run
            print(json.dumps({"run": run.status,
                              "nodes": {n: r.status for n, r in run.nodes.items()}}),
                  flush=True)
""")


def test_a_keyboard_interrupt_of_the_main_process_cancels_and_kills_running_workers(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(_INTERRUPTED_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                          env=env) as main:
        try:
            worker = int(main.stdout.readline())
            main.send_signal(signal.SIGINT)  # what a kernel interrupt does to the kernel process
            report, _ = main.communicate(timeout=60)
        finally:
            main.kill()  # no-op once it exited; a run that ignored the interrupt fails the test
    assert main.returncode == 0
    import json

    assert json.loads(report) == {"run": "cancelled",
                                  "nodes": {"first": "completed", "stuck": "cancelled"}}
    assert not psutil.pid_exists(worker)


def test_shutting_a_pool_down_kills_the_running_task_and_cancels_the_queued_ones(tmp_path):
    from concurrent.futures import CancelledError

    from lazyflow.executors.base import Task

    fifo = str(tmp_path / "started")
    os.mkfifo(fifo)

    def stuck():
        with open(fifo, "w") as f:
            f.write(str(os.getpid()))
        signal.pause()

    pool = ProcessExecutor(1)
    running = pool.submit(Task("stuck", stuck, {}))
    queued = pool.submit(Task("queued", int, {}))
    with open(fifo) as f:
        pid = int(f.read())
    pool.shutdown()
    assert queued.cancelled()
    with pytest.raises(CancelledError):
        running.result(10)
    assert not psutil.pid_exists(pid)
