"""Per-node profile: CPU time of the thread that ran the call; peak memory where measured."""

from __future__ import annotations

import threading
import time

import numpy as np

_MB = 2**20


def _spin(seconds: float) -> int:
    end, n = time.thread_time() + seconds, 0
    while time.thread_time() < end:
        n += 1
    return n


def test_a_computed_node_records_its_cpu_seconds(flow):
    @flow.node
    def busy():
        return _spin(0.05)

    record = flow.run("busy").nodes["busy"]
    assert record.cpu is not None and record.cpu >= 0.05


def test_cpu_time_is_the_calls_own_thread_not_the_whole_process(flow):
    started = threading.Barrier(2)

    @flow.node
    def busy():
        started.wait()
        return _spin(0.2)

    @flow.node
    def waiting():
        started.wait()
        time.sleep(0.2)  # the work of this node: it uses no CPU
        return 0

    @flow.node
    def both(busy, waiting):
        return busy + waiting

    run = flow.run("both", executor="threads", max_workers=2)
    assert run.nodes["waiting"].cpu < run.nodes["busy"].cpu / 4


def test_peak_memory_is_not_measured_by_default_in_process(flow):
    @flow.node
    def table():
        return np.ones(10 * _MB, dtype=np.uint8)

    assert flow.run("table").nodes["table"].peak_memory is None


def test_profile_memory_measures_the_peak_of_a_call_with_tracemalloc(flow):
    @flow.node(profile_memory=True)
    def table():
        scratch = np.ones(40 * _MB, dtype=np.uint8)  # freed before the call returns
        return int(scratch.sum())

    assert flow.run("table").nodes["table"].peak_memory >= 40 * _MB


def test_a_worker_process_measures_peak_memory_without_being_asked(flow):
    @flow.node
    def table():
        scratch = np.ones(80 * _MB, dtype=np.uint8)
        return int(scratch.sum())

    record = flow.run("table", executor="processes").nodes["table"]
    # what the call added at its peak: the 80 MiB array, less pages the worker held before
    assert 70 * _MB <= record.peak_memory < 160 * _MB


def test_a_hit_has_no_profile_of_its_own(flow):
    @flow.node
    def busy():
        return _spin(0.01)

    flow.get("busy")
    record = flow.run("busy").nodes["busy"]
    assert record.status == "cached" and record.cpu is None


def test_a_worker_resets_its_peak_between_calls(flow):
    @flow.node
    def big():
        return int(np.ones(120 * _MB, dtype=np.uint8).sum())

    @flow.node
    def small(big):
        return big + 1

    run = flow.run("small", executor="processes", max_workers=1)
    assert run.nodes["small"].peak_memory < run.nodes["big"].peak_memory - 60 * _MB
