"""The Dask executor on a real LocalCluster: nodes run on workers, lost workers are survived."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

import lazyflow as lf

pytestmark = pytest.mark.cluster


def _diamond(flow: lf.Flow) -> None:
    @flow.node
    def source(n: int = 4):
        return list(range(n))

    @flow.node
    def left(source):
        return sum(source)

    @flow.node
    def right(source):
        return max(source)

    @flow.node
    def joined(left, right):
        return left + right


def test_a_client_gives_the_reference_results_and_statuses(dask_client):
    reference, other = lf.Flow("ref", cache=lf.Cache(disk=None)), \
        lf.Flow("other", cache=lf.Cache(disk=None))
    _diamond(reference)
    _diamond(other)
    expected = reference.run("joined")
    got = other.run("joined", executor=dask_client)
    assert got.executor == "dask"
    assert got["joined"] == expected["joined"] == 9
    assert {n: (r.status, r.key, r.digest) for n, r in got.nodes.items()} == \
        {n: (r.status, r.key, r.digest) for n, r in expected.nodes.items()}


def test_nodes_run_on_the_workers_not_the_client(flow, dask_client):
    @flow.node
    def where():
        return os.getpid()

    workers = {w for w in dask_client.run(os.getpid).values()}
    assert flow.get("where", executor=dask_client) in workers


def test_the_dask_name_uses_the_client_of_the_environment(flow, dask_client):
    @flow.node
    def where():
        return os.getpid()

    assert flow.get("where", executor="dask") != os.getpid()


def test_independent_branches_overlap_on_the_cluster(flow, dask_client, meeting):
    @flow.node
    def left():
        meeting("left")
        return 1

    @flow.node
    def right():
        meeting("right")
        return 2

    run = flow.run(["left", "right"], executor=dask_client)
    a, b = run.nodes["left"], run.nodes["right"]
    assert a.started < b.ended and b.started < a.ended


def test_retries_and_skip_behave_as_on_the_reference_path(flow, dask_client, ledger):
    @flow.node(retries=2, retry_delay=0)
    def flaky():
        ledger.note("flaky")
        if ledger.count("flaky") < 2:
            raise ConnectionError("glitch")
        return 1

    @flow.node(on_error="skip")
    def bad():
        raise RuntimeError("no data")

    @flow.node
    def after(bad):
        return bad

    run = flow.run(["flaky", "after"], executor=dask_client)
    assert run["flaky"] == 1 and run.nodes["flaky"].attempts == ledger.count("flaky") == 2
    assert (run.failed, run.skipped) == (["bad"], ["after"])


def test_a_worker_killed_mid_task_is_survived_by_retrying_on_another(flow, dask_client, tmp_path):
    killed = tmp_path / "killed"

    @flow.node
    def fragile():
        if not killed.exists():
            killed.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task
        return os.getpid()

    @flow.node
    def after(fragile):
        return fragile

    run = flow.run("after", executor=dask_client)
    assert run.status == "completed"
    assert run["after"] != int(killed.read_text())
    dask_client.wait_for_workers(2)


def test_a_node_past_its_timeout_is_stopped_by_restarting_its_worker(flow, dask_client,
                                                                      tmp_path):
    pid_file = tmp_path / "pid"

    @flow.node(timeout=1)
    def stuck():
        pid_file.write_text(str(os.getpid()))
        signal.pause()

    with pytest.raises(lf.NodeTimeout, match="node 'stuck'") as caught:
        flow.get("stuck", executor=dask_client)
    assert "may still be running" not in str(caught.value)
    assert not psutil.pid_exists(int(pid_file.read_text()))
    dask_client.wait_for_workers(2)


def test_a_resource_no_worker_declares_is_refused_naming_the_node(flow, dask_client):
    @flow.node(resources={"gpus": 1})
    def train():
        return 1

    with pytest.raises(lf.ResourceError, match="node 'train' needs gpus, which no Dask worker"):
        flow.get("train", executor=dask_client)


def test_cpus_and_memory_needs_are_left_to_dask_when_workers_do_not_declare_them(
        flow, dask_client):
    @flow.node(resources={"cpus": 64, "memory": "1TB"})
    def big():
        return 1

    assert flow.get("big", executor=dask_client) == 1


def test_registered_hashers_are_installed_on_the_workers(flow, dask_client):
    class Point:
        def __init__(self, x):
            self.x = x

    lf.register_hasher(Point, lambda p: p.x)

    @flow.node
    def point():
        return Point(1)

    assert flow.run("point", executor=dask_client).nodes["point"].digest == \
        lf.hash_value(Point(1))


def test_without_a_client_the_dask_name_says_how_to_make_one(flow, monkeypatch):
    import distributed

    def none():
        raise ValueError("No global client found")

    monkeypatch.setattr(distributed, "get_client", none)

    @flow.node
    def f():
        return 1

    with pytest.raises(lf.LazyflowError, match="no running distributed.Client"):
        flow.get("f", executor="dask")
