"""The Dask executor on a real LocalCluster conforms to the reference path; lost workers are
survived, shared tiers carry values between workers."""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
from pathlib import Path

import pytest
from chains import define_diamond
from executor_conformance import ConcurrentConformance

import lazyflow as lf
from lazyflow.cache.base import NO_VALUE
from lazyflow.cache.memory import MemoryTier

pytestmark = pytest.mark.cluster


class DirTier:
    """A stand-in for the remote tier: a directory every worker can open by itself."""

    name = "remote"

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def opener(self):
        return functools.partial(DirTier, str(self.root))

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def contains(self, key):
        return self.meta(key) is not None

    def meta(self, key):
        path = self.root / f"{key}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def get(self, key):
        if not (self.root / f"{key}.json").exists():
            raise KeyError(key)
        value = self.root / f"{key}.pickle"
        return pickle.loads(value.read_bytes()) if value.exists() else NO_VALUE

    def put(self, key, value, meta):
        if value is not NO_VALUE:
            self._write(self.root / f"{key}.pickle", pickle.dumps(value, protocol=5))
        self._write(self.root / f"{key}.json", json.dumps(meta, default=str).encode())

    def delete(self, key):
        for suffix in ("json", "pickle"):
            (self.root / f"{key}.{suffix}").unlink(missing_ok=True)

    def keys(self):
        return iter(p.stem for p in self.root.glob("*.json"))

    def clear(self):
        for key in list(self.keys()):
            self.delete(key)


class UnwritableOnWorkers(DirTier):
    """A shared tier that workers can read but not write (a read-only mount, say)."""

    def opener(self):
        return functools.partial(_ReadOnlyDirTier, str(self.root))


class _ReadOnlyDirTier(DirTier):
    def put(self, key, value, meta):
        raise PermissionError("read-only")


class Tracked:
    """A value that notes, in a ledger, every process that unpickles it."""

    def __init__(self, payload: bytes, ledger: str) -> None:
        self.payload, self.ledger = payload, ledger

    def __reduce__(self):
        return _unpickled, (self.payload, self.ledger)


def _unpickled(payload: bytes, ledger: str) -> Tracked:
    with open(ledger, "a") as f:
        f.write(f"{os.getpid()}\n")
    return Tracked(payload, ledger)


lf.register_hasher(Tracked, lambda t: t.payload)


class TestDaskExecutor(ConcurrentConformance):
    """``executor="dask"``: the environment's client, on a real LocalCluster of two worker
    processes; a running node is stopped by restarting its worker through its nanny."""

    executor = "dask"
    stops_running_nodes = True
    timeout = 3.0  # on Dask the clock starts at submission: room to start

    @pytest.fixture(autouse=True)
    def _cluster(self, dask_client):
        """The session's cluster as the default client; both workers back afterwards."""
        yield
        dask_client.wait_for_workers(2)


def test_a_client_object_runs_the_flow_on_its_cluster(dask_client):
    flow = define_diamond(lf.Flow("diamond", cache=lf.Cache(disk=None)))
    run = flow.run("joined", executor=dask_client)
    assert (run.executor, run["joined"], run.status) == ("dask", 9, "completed")


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


def test_with_a_shared_tier_large_values_go_worker_to_worker_not_through_the_client(
        dask_client, tmp_path):
    shared = DirTier(str(tmp_path / "shared"))
    flow = lf.Flow("shared", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))
    ledger = str(tmp_path / "unpickled")

    @flow.node
    def produce():
        return Tracked(b"x" * 10_000_000, ledger)

    @flow.node
    def consume(produce):
        return len(produce.payload)

    run = flow.run("consume", executor=dask_client)
    assert run["consume"] == 10_000_000
    pids = {int(line) for line in Path(ledger).read_text().split()}
    assert os.getpid() not in pids  # the client never held the large value
    key = run.nodes["produce"].key
    assert shared.meta(key)["node"] == "produce"
    assert shared.meta(key)["pid"] in dask_client.run(os.getpid).values()  # written by a worker
    assert not flow.cache.tier("memory").contains(key)


def test_a_shared_run_gives_the_reference_records_and_a_hit_next_time(dask_client, tmp_path):
    shared = DirTier(str(tmp_path / "shared"))
    flow = lf.Flow("shared", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))
    reference = lf.Flow("shared", cache=lf.Cache(disk=None))
    define_diamond(flow)
    define_diamond(reference)
    got, expected = flow.run("joined", executor=dask_client), reference.run("joined")
    assert {n: (r.status, r.key, r.digest) for n, r in got.nodes.items()} == \
        {n: (r.status, r.key, r.digest) for n, r in expected.nodes.items()}
    assert got["joined"] == 9
    again = lf.Flow("shared", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))
    define_diamond(again)
    run = again.run("joined")
    assert run.nodes["joined"].status == "cached" and run.nodes["joined"].tier == "remote"
    assert run["joined"] == 9


@pytest.mark.s3
def test_with_an_s3_remote_tier_workers_exchange_values_through_it(dask_client, s3_url,
                                                                    s3_options, tmp_path):
    flow = lf.Flow("s3", cache=lf.Cache(memory="1GB", disk=None, remote=s3_url,
                                        remote_options=s3_options))
    ledger = str(tmp_path / "unpickled")

    @flow.node
    def produce():
        return Tracked(b"y" * 5_000_000, ledger)

    @flow.node
    def consume(produce):
        return len(produce.payload)

    run = flow.run("consume", executor=dask_client)
    assert run["consume"] == 5_000_000
    assert os.getpid() not in {int(line) for line in Path(ledger).read_text().split()}
    remote = flow.cache.tier("remote")
    assert remote.meta(run.nodes["produce"].key)["node"] == "produce"
    again = lf.Flow("s3", cache=lf.Cache(memory="1GB", disk=None, remote=s3_url,
                                         remote_options=s3_options))
    again.node(produce)
    again.node(consume)
    hit = again.run("consume")
    assert hit.nodes["consume"].status == "cached" and hit.nodes["consume"].tier == "remote"


def test_a_worker_that_cannot_write_the_shared_tier_sends_its_value_back(dask_client, tmp_path):
    shared = UnwritableOnWorkers(str(tmp_path / "shared"))
    flow = lf.Flow("readonly", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))
    define_diamond(flow)
    run = flow.run("joined", executor=dask_client)
    assert run["joined"] == 9 and run.status == "completed"
    assert shared.meta(run.nodes["joined"].key)["node"] == "joined"  # stored by the client


# --------------------------------------------------------------------------- graphs


class GraphCount:
    """A scheduler plugin counting the graphs the scheduler receives, the nodes' tasks in
    them (not the collectors that bring their outcomes back together) and the keys the
    client wants of them; and noting each graph's generation (the scheduler runs the
    tasks of an older generation first)."""

    name = "lazyflow-test-graph-count"

    def __init__(self) -> None:
        self.graphs = 0
        self.tasks = 0
        self.wanted = 0
        self.generations: list[float] = []

    def update_graph(self, scheduler, *, tasks=(), keys=(), priority=None, **kwargs) -> None:
        self.graphs += 1
        self.tasks += sum(not str(t).startswith("lazyflow-collect-") for t in tasks)
        self.wanted += len(keys)
        # its new tasks' (the tasks of earlier graphs it follows keep theirs)
        self.generations.append(max(p[1] for p in (priority or {}).values() if p))


@pytest.fixture
def graphs_received(dask_client):
    """How many graphs (``count("tasks")``: nodes' tasks, ``count("wanted")``: keys the
    client wants) the cluster's scheduler has received since the test began."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    plugin = type("Counting", (GraphCount, SchedulerPlugin), {})()
    dask_client.register_plugin(plugin)

    def count(what: str = "graphs") -> int:
        return dask_client.run_on_scheduler(
            lambda dask_scheduler: getattr(dask_scheduler.plugins[GraphCount.name], what))

    yield count
    dask_client.unregister_scheduler_plugin(GraphCount.name)


def _chain(flow: lf.Flow, length: int) -> str:
    flow.node(name="c0")(lambda: 0)
    for i in range(1, length):
        flow.node(name=f"c{i}", inputs={"previous": f"c{i - 1}"})(lambda previous: previous + 1)
    return f"c{length - 1}"


def test_a_chain_goes_to_the_cluster_as_one_graph(flow, dask_client, graphs_received):
    last = _chain(flow, 20)
    run = flow.run(last, executor=dask_client)
    assert run[last] == 19 and run.status == "completed"
    assert graphs_received() == 1  # not one per node: no round trip to the client between


def test_a_chain_run_as_a_graph_gives_the_reference_records(dask_client):
    reference = lf.Flow("chain", cache=lf.Cache(disk=None))
    graph = lf.Flow("chain", cache=lf.Cache(disk=None))
    last = _chain(reference, 20)
    _chain(graph, 20)
    expected = reference.run(last)
    got = graph.run(last, executor=dask_client)
    assert {n: (r.status, r.key, r.digest) for n, r in got.nodes.items()} == \
        {n: (r.status, r.key, r.digest) for n, r in expected.nodes.items()}
    assert graph.cache.lookup(got.nodes["c7"].key)[0]["input_digests"] == \
        reference.cache.lookup(expected.nodes["c7"].key)[0]["input_digests"]


def _parity_chain(flow: lf.Flow, ledger) -> None:
    @flow.node
    def parity(n: int):
        ledger.note("parity")
        return n % 2

    @flow.node
    def label(parity):
        ledger.note("label")
        return f"odd={parity}"

    @flow.node
    def shout(label):
        ledger.note("shout")
        return label.upper()


def test_nodes_after_one_computed_again_to_an_equal_value_are_not_called_on_the_workers(
        flow, dask_client, ledger):
    _parity_chain(flow, ledger)
    flow.get("shout", n=1, executor=dask_client)
    run = flow.run("shout", n=3, executor=dask_client)  # parity runs again: 3 % 2 == 1 % 2
    assert run["shout"] == "ODD=1"
    assert {n: r.status for n, r in run.nodes.items()} == \
        {"parity": "completed", "label": "cached", "shout": "cached"}
    assert [ledger.count(n) for n in ("parity", "label", "shout")] == [2, 1, 1]


def test_with_a_shared_tier_workers_look_nodes_after_a_recomputed_one_up_there(
        dask_client, ledger, tmp_path):
    shared = DirTier(str(tmp_path / "shared"))
    first = lf.Flow("parity", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))
    _parity_chain(first, ledger)
    first.get("shout", n=1, executor=dask_client)
    other = lf.Flow("parity", cache=lf.Cache(tiers=[MemoryTier(2**30), shared]))  # a colleague
    _parity_chain(other, ledger)
    run = other.run("shout", n=3, executor=dask_client)
    assert run["shout"] == "ODD=1"
    assert {n: (r.status, r.tier) for n, r in run.nodes.items()} == \
        {"parity": ("completed", None), "label": ("cached", "remote"),
         "shout": ("cached", "remote")}
    assert [ledger.count(n) for n in ("parity", "label", "shout")] == [2, 1, 1]


def test_a_node_after_a_fallback_runs_with_the_fallback_value(flow, dask_client, ledger):
    @flow.node(on_error="fallback", fallback=0)
    def flaky():
        raise ConnectionError("down")

    @flow.node
    def plus_one(flaky):
        ledger.note("plus_one")
        return flaky + 1

    run = flow.run("plus_one", executor=dask_client)
    assert run["plus_one"] == 1
    assert (run.nodes["flaky"].status, run.nodes["plus_one"].status) == \
        ("fallback", "completed")  # the fallback stood in for it (run.STATUSES)


def test_a_failed_node_skips_the_nodes_submitted_after_it(flow, dask_client, ledger):
    @flow.node(on_error="skip")
    def broken():
        raise LookupError("no rows")

    @flow.node
    def counted(broken):
        ledger.note("counted")
        return broken

    @flow.node
    def reported(counted):
        ledger.note("reported")
        return counted

    run = flow.run("reported", executor=dask_client)
    assert (run.failed, run.skipped) == (["broken"], ["counted", "reported"])
    assert ledger.count("counted") == ledger.count("reported") == 0


def test_a_graph_step_hands_the_steps_after_it_their_own_copy_of_its_value():
    from lazyflow.cache.snapshot import handout
    from lazyflow.engine.step import GraphStep

    def grow(items):
        items.append(3)  # changes its input in place
        return len(items)

    produced = GraphStep("produce", lambda: [1, 2], {}, code="produce")()
    grown = GraphStep("grow", grow, {}, code="grow", follows=(("items", "produce"),))(produced)
    assert grown.value == 3
    assert handout(produced.value) == [1, 2]  # what the engine receives, and another step
    assert produced.digest == lf.hash_value([1, 2])


def test_a_graph_step_does_not_call_a_node_whose_key_the_client_named_as_stored():
    import lazyflow.keys as keys
    from lazyflow.engine.step import FOUND, GraphStep

    produced = GraphStep("produce", lambda: 1, {}, code="produce")()
    key = keys.content_key("double", {}, {"x": produced.digest})
    step = GraphStep("double", lambda x: 1 / 0, {}, code="double", follows=(("x", "produce"),),
                     look=True, found={key: ("digest-of-2", 0.5)})
    outcome = step(produced)
    assert (outcome.state, outcome.key, outcome.digest, outcome.error) == \
        (FOUND, key, "digest-of-2", None)


def test_when_workers_cannot_hash_like_the_client_no_node_is_sent_ahead_again(
        flow, dask_client, graphs_received, monkeypatch):
    import lazyflow.executors.dask_workers as dask_workers

    monkeypatch.setattr(dask_workers, "pack_hashers", lambda hashers: None)  # unpicklable
    last = _chain(flow, 10)
    assert flow.get(last, executor=dask_client) == 9
    # the first graph sends the chain ahead; its first result comes back unhashed, so the
    # rest are sent one by one: not each with the rest of the chain ahead of it again
    assert graphs_received("tasks") == 10 + 9


# --------------------------------------------------------------------------- batches


def test_the_client_wants_one_key_for_a_graph_of_forty_nodes_not_one_per_node(
        flow, dask_client, graphs_received):
    for i in range(40):
        flow.node(name=f"r{i}")(lambda i=i: i)
    run = flow.run([f"r{i}" for i in range(40)], executor=dask_client)
    assert [run[f"r{i}"] for i in range(40)] == list(range(40))
    assert graphs_received("tasks") == 40
    # the graph's outcomes come back as its collector's one result: the scheduler does
    # not report, keep and release each node's result for the client
    assert graphs_received("wanted") == 1


def _fan_in(flow: lf.Flow, size: int) -> None:
    """A binary fan-in tree: node i adds nodes 2i+1 and 2i+2 (leaves return i)."""
    for i in range(size):
        if 2 * i + 2 < size:
            flow.node(name=f"t{i}", inputs={"left": f"t{2 * i + 1}",
                                            "right": f"t{2 * i + 2}"})(lambda left, right: left + right)
        else:
            flow.node(name=f"t{i}")(lambda i=i: i)


def test_a_graph_whose_tasks_follow_an_earlier_graphs_batches_gives_the_reference_records(
        dask_client, graphs_received, monkeypatch):
    import lazyflow.executors.dask as dask_executor

    monkeypatch.setattr(dask_executor, "_BATCH", 8)  # many graphs, each following earlier ones
    monkeypatch.setattr(dask_executor, "_COLLECT", 3)
    reference = lf.Flow("tree", cache=lf.Cache(disk=None))
    graph = lf.Flow("tree", cache=lf.Cache(disk=None))
    _fan_in(reference, 31)
    _fan_in(graph, 31)
    expected = reference.run("t0")
    got = graph.run("t0", executor=dask_client)
    assert got["t0"] == sum(range(15, 31))
    assert graphs_received() > 1
    assert {n: (r.status, r.key, r.digest) for n, r in got.nodes.items()} == \
        {n: (r.status, r.key, r.digest) for n, r in expected.nodes.items()}


def test_each_graph_of_a_run_is_scheduled_after_the_graphs_sent_before_it(
        dask_client, graphs_received, monkeypatch):
    import lazyflow.executors.dask as dask_executor

    monkeypatch.setattr(dask_executor, "_BATCH", 8)
    flow = lf.Flow("tree", cache=lf.Cache(disk=None))
    _fan_in(flow, 31)
    assert flow.get("t0", executor=dask_client) == sum(range(15, 31))
    # one generation a graph, each newer than the last: a graph's tasks, and the
    # collector that brings them back, come before the tasks of graphs sent after it
    generations = graphs_received("generations")
    assert len(generations) > 2
    assert generations == sorted(set(generations))


def test_a_graph_is_named_without_dask_hashing_its_tasks(flow, dask_client, monkeypatch):
    from dask._expr import LLGExpr

    def hashing(self):
        raise AssertionError("the graph was named by hashing its tasks")

    monkeypatch.setattr(LLGExpr, "__dask_tokenize__", hashing)
    assert flow.get(_chain(flow, 5), executor=dask_client) == 4


def test_a_value_that_cannot_be_sent_back_fails_its_node_not_the_others_sent_with_it(
        flow, dask_client):
    import threading

    flow.node(name="locked")(lambda: threading.Lock())
    for i in range(10):
        flow.node(name=f"r{i}")(lambda i=i: i)
    with pytest.raises(TypeError, match="pickle"):
        flow.run(["locked"] + [f"r{i}" for i in range(10)], executor=dask_client)
    run = flow.last_run
    assert run.failed == ["locked"]
    assert [run.nodes[f"r{i}"].status for i in range(10)] == ["completed"] * 10


def test_a_node_of_a_batch_is_recorded_when_it_ends_not_when_the_batch_does(
        flow, dask_client, tmp_path):
    import threading

    from gates import Gate, wait_at

    from lazyflow.engine.events import NodeFinished

    quick_recorded = threading.Event()

    def observe(event) -> None:
        if isinstance(event, NodeFinished) and event.record.name == "quick":
            quick_recorded.set()

    with Gate(tmp_path / "gate") as gate:
        path = gate.path
        flow.node(name="quick")(lambda: 1)

        @flow.node
        def held():
            wait_at(path)
            return 2

        handle = flow.submit(["quick", "held"], executor=dask_client, observers=[observe])
        # one batch, whose collector waits for 'held': 'quick' is fetched on its own
        assert quick_recorded.wait(30)
        assert handle.run.nodes["held"].status == "running"
        gate.open()
        run = handle.result(60)
    assert (run["quick"], run["held"]) == (1, 2)


# --------------------------------------------------------------------------- travel

_NOTEBOOK = '''
import copy, pickle, sys
from lazyflow.executors.base import Task
from lazyflow.executors.dask_travel import Shipped

class Point:  # defined in __main__, as in a notebook: no worker has it by name
    def __init__(self, x):
        self.x = x

def make(x):
    return Point(x)

tasks = [Shipped(Task("make", make, {"x": 1}), ()),  # a function of __main__
         Shipped(Task("copy", copy.copy, {"x": Point(2)}), ())]  # a value of __main__
sys.stdout.buffer.write(pickle.dumps(tasks))
'''


def test_a_task_and_a_value_defined_in_main_travel_by_value(tmp_path):
    import subprocess
    import sys

    from lazyflow.executors.dask_travel import packed, unpacked

    script = tmp_path / "notebook.py"
    script.write_text(_NOTEBOOK)
    sent = subprocess.run([sys.executable, str(script)], capture_output=True, check=True)
    made, copied = (unpacked(packed(unpacked(task()))) for task in pickle.loads(sent.stdout))
    # this process's __main__ has no Point: each came by value, there and back
    assert (type(made.value).__name__, made.value.x, made.error) == ("Point", 1, None)
    assert (type(copied.value).__name__, copied.value.x, copied.error) == ("Point", 2, None)


def test_an_outcome_of_plain_values_is_pickled_without_cloudpickle(monkeypatch):
    import cloudpickle

    from lazyflow.executors.base import Outcome
    from lazyflow.executors.dask_travel import packed, unpacked

    def slow(*args, **kwargs):
        raise AssertionError("pickled by cloudpickle")

    monkeypatch.setattr(cloudpickle, "dumps", slow)
    outcome = unpacked(packed(Outcome(value={"n": [1, 2.5, "x"]}, digest="d", attempts=1)))
    assert (outcome.value, outcome.digest) == ({"n": [1, 2.5, "x"]}, "d")
