"""The scheduler on random DAGs: what runs, how often, in which order, and the same records
under every executor as under the synchronous reference path.

Each example is a random DAG of up to 25 nodes (edges from earlier to later nodes, some nodes
reading flow inputs) and a few random targets. Its nodes are :class:`Step` objects that write
``start NAME`` and ``end NAME`` to a :class:`CallLog` (a file, so calls in worker processes
count too) and return a digest of their name and inputs, so a node's value changes whenever
one of its inputs does and early cutoff never hides a re-run. The log hashes to a constant:
keys ignore it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from executor_conformance import records
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lazyflow as lf

FLOW_INPUTS = ("x0", "x1", "x2")
BASE_INPUTS = {"x0": 0, "x1": 10, "x2": 20}
EXECUTORS = ["sync", "threads", "processes"]

# Each example builds and runs flows of up to 25 nodes (a few ms in threads, a few tens of ms
# through worker processes): enough examples to meet long chains, wide fans and shared
# ancestors, few enough for the whole file to take well under a minute on two cores.
examples = settings(max_examples=50)


class CallLog:
    """Lines appended by nodes in any thread or process: ``start NAME`` and ``end NAME``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def note(self, line: str) -> None:
        """Append ``line`` (one ``write`` to a file opened for appending: never interleaved)."""
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def lines(self) -> list[str]:
        """Every line noted so far, in the order written."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return f.read().splitlines()

    def started(self) -> Counter[str]:
        """How often each node started."""
        return Counter(line.split()[1] for line in self.lines() if line.startswith("start "))

    def clear(self) -> None:
        """Forget every line (between two requests of one example)."""
        if os.path.exists(self.path):
            os.remove(self.path)


lf.register_hasher(CallLog, lambda log: "call log")


def step_value(name: str, inputs: dict[str, Any]) -> str:
    """What node ``name`` returns for ``inputs``: differs whenever any input differs."""
    return hashlib.sha256(repr((name, sorted(inputs.items()))).encode()).hexdigest()[:16]


class Step:
    """A DAG node's function: takes its upstream nodes and flow inputs by name, logs its
    start and end, returns :func:`step_value`."""

    def __init__(self, name: str, params: tuple[str, ...], log: CallLog) -> None:
        self.name, self.params, self.log = name, params, log

    @property
    def __signature__(self) -> inspect.Signature:
        # lazyflow wires parameters by name: this is how a Step tells it which it takes
        return inspect.Signature([inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY)
                                  for p in self.params])

    def __call__(self, **inputs: Any) -> str:
        self.log.note(f"start {self.name}")
        value = step_value(self.name, inputs)
        self.log.note(f"end {self.name}")
        return value


@dataclass(frozen=True)
class Dag:
    """A random DAG: node ``i`` is named ``n<i>`` and reads earlier nodes and flow inputs."""

    upstream: tuple[tuple[int, ...], ...]
    reads: tuple[tuple[str, ...], ...]
    targets: tuple[int, ...]

    def names(self, nodes: set[int] | tuple[int, ...]) -> set[str]:
        """The node names of ``nodes``."""
        return {f"n{i}" for i in nodes}

    def needed(self) -> set[int]:
        """The targets and all their ancestors."""
        needed, stack = set(), list(self.targets)
        while stack:
            i = stack.pop()
            if i not in needed:
                needed.add(i)
                stack.extend(self.upstream[i])
        return needed

    def descendants(self, nodes: set[int]) -> set[int]:
        """``nodes`` and every node downstream of one of them."""
        found = set(nodes)
        for i in range(len(self.upstream)):  # nodes come in topological order
            if found.intersection(self.upstream[i]):
                found.add(i)
        return found

    def inputs(self) -> dict[str, int]:
        """Values for the flow inputs the needed nodes read (and no others: a keyword
        no planned node takes is refused)."""
        read = {x for i in self.needed() for x in self.reads[i]}
        return {x: v for x, v in BASE_INPUTS.items() if x in read}

    def readers(self, flow_input: str) -> set[int]:
        """The nodes that read ``flow_input``."""
        return {i for i, reads in enumerate(self.reads) if flow_input in reads}

    def build(self, log: CallLog) -> lf.Flow:
        """A fresh flow (memory cache only) with one :class:`Step` per node."""
        flow = lf.Flow("dag", cache=lf.Cache(disk=None))
        for i, (upstream, reads) in enumerate(zip(self.upstream, self.reads, strict=True)):
            params = tuple(f"n{u}" for u in upstream) + reads
            flow.node(Step(f"n{i}", params, log), name=f"n{i}")
        return flow

    def values(self, inputs: dict[str, int]) -> dict[str, str]:
        """What each needed node should return, composed here without lazyflow."""
        values: dict[str, str] = {}
        for i in sorted(self.needed()):
            kwargs: dict[str, Any] = {f"n{u}": values[f"n{u}"] for u in self.upstream[i]}
            kwargs.update({x: inputs[x] for x in self.reads[i]})
            values[f"n{i}"] = step_value(f"n{i}", kwargs)
        return values

    def request(self) -> list[str]:
        """The targets, as given to ``flow.run``."""
        return [f"n{i}" for i in self.targets]


@st.composite
def dags(draw: st.DrawFn) -> Dag:
    """DAGs of 1 to 25 nodes: a node is a source or reads 1 to 4 earlier nodes, and reads up
    to 2 flow inputs; one target among the last three nodes (deep, with many ancestors) and
    up to two anywhere."""
    size = draw(st.integers(1, 25))
    upstream = tuple(() if i == 0 or draw(st.integers(0, 4)) == 0 else
                     tuple(sorted(draw(st.sets(st.integers(0, i - 1), min_size=1,
                                               max_size=4))))
                     for i in range(size))
    reads = tuple(tuple(sorted(draw(st.sets(st.sampled_from(FLOW_INPUTS), max_size=2))))
                  for _ in range(size))
    deep = draw(st.integers(max(0, size - 3), size - 1))
    others = draw(st.sets(st.integers(0, size - 1), max_size=2))
    return Dag(upstream, reads, tuple(sorted({deep, *others})))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory):
    """A maker of fresh call logs (module-scoped: hypothesis runs many examples per test)."""
    folder = tmp_path_factory.mktemp("call-logs")
    made = iter(range(10**9))
    return lambda: CallLog(str(folder / f"calls-{next(made)}"))


def _run(flow: lf.Flow, dag: Dag, executor: Any, **inputs: int) -> lf.Run:
    return flow.run(dag.request(), executor=executor, max_workers=2, **inputs)


def _changed(dag: Dag, data: st.DataObject) -> tuple[dict[str, int], str | None]:
    """The request's inputs with one of them (drawn) changed, and its name (``None`` when
    the needed nodes read no flow input)."""
    inputs = dag.inputs()
    if not inputs:
        return inputs, None
    changed = data.draw(st.sampled_from(sorted(inputs)), label="changed input")
    return {**inputs, changed: inputs[changed] + 1}, changed


# --------------------------------------------------------------------------- what runs, when


@pytest.mark.parametrize("executor", EXECUTORS)
@examples
@given(dag=dags())
def test_each_needed_node_runs_exactly_once_and_nothing_else_runs(executor, dag, logs):
    log = logs()
    run = _run(dag.build(log), dag, executor, **dag.inputs())
    needed = dag.names(dag.needed())
    assert log.started() == Counter(needed)
    assert {n: r.status for n, r in run.nodes.items()} == dict.fromkeys(needed, "completed")


@pytest.mark.parametrize("executor", EXECUTORS)
@examples
@given(dag=dags())
def test_a_node_starts_only_after_all_its_inputs_ended(executor, dag, logs):
    log = logs()
    _run(dag.build(log), dag, executor, **dag.inputs())
    position = {line: at for at, line in enumerate(log.lines())}
    for i in dag.needed():
        for u in dag.upstream[i]:
            assert position[f"end n{u}"] < position[f"start n{i}"], (f"n{i}", f"n{u}")


@pytest.mark.parametrize("executor", EXECUTORS)
@examples
@given(dag=dags())
def test_the_targets_values_are_the_node_functions_composed(executor, dag, logs):
    inputs = dag.inputs()
    run = _run(dag.build(logs()), dag, executor, **inputs)
    expected = dag.values(inputs)
    assert {t: run[t] for t in dag.request()} == {t: expected[t] for t in dag.request()}


@pytest.mark.parametrize("executor", EXECUTORS)
@examples
@given(dag=dags())
def test_a_second_identical_request_runs_nothing(executor, dag, logs):
    log = logs()
    flow = dag.build(log)
    _run(flow, dag, executor, **dag.inputs())
    log.clear()
    again = _run(flow, dag, executor, **dag.inputs())
    assert log.lines() == []
    assert {r.status for r in again.nodes.values()} == {"cached"}


@pytest.mark.parametrize("executor", EXECUTORS)
@examples
@given(dag=dags(), data=st.data())
def test_changing_a_flow_input_reruns_exactly_the_needed_nodes_downstream_of_its_readers(
        executor, dag, data, logs):
    inputs, changed = _changed(dag, data)
    assume(changed is not None)
    log = logs()
    flow = dag.build(log)
    _run(flow, dag, executor, **dag.inputs())
    log.clear()
    _run(flow, dag, executor, **inputs)
    rerun = dag.descendants(dag.readers(changed)) & dag.needed()
    assert log.started() == Counter(dag.names(rerun))


# --------------------------------------------------------------------------- executor parity


def _records_of_two_requests(dag: Dag, executor: Any, inputs: dict[str, int],
                             logs) -> list[dict[str, tuple[str, str | None, str | None]]]:
    """The records of a cold request, then of one with ``inputs``, on a fresh flow."""
    flow = dag.build(logs())
    first = _run(flow, dag, executor, **dag.inputs())
    second = _run(flow, dag, executor, **inputs)
    return [records(first), records(second)]


@pytest.mark.parametrize("executor", ["threads", "processes"])
@examples
@given(dag=dags(), data=st.data())
def test_every_executor_gives_the_records_of_the_synchronous_path(executor, dag, data, logs):
    inputs, _ = _changed(dag, data)
    assert _records_of_two_requests(dag, executor, inputs, logs) == \
        _records_of_two_requests(dag, "sync", inputs, logs)


@pytest.mark.cluster
@examples
@given(dag=dags(), data=st.data())
def test_dask_gives_the_records_of_the_synchronous_path(dag, data, logs, dask_client):
    inputs, _ = _changed(dag, data)
    assert _records_of_two_requests(dag, dask_client, inputs, logs) == \
        _records_of_two_requests(dag, "sync", inputs, logs)
