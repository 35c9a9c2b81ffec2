"""Attacks on cache hits from other threads, other processes and other entry points.

A hit must be a value the node's function would compute now, in the requesting
context: a value computed while another thread rebound a global, changed a flow
input in place or redefined the node must never be stored under the key of the
state the request started with.
"""

from __future__ import annotations

import threading
from typing import Any

import lazyflow as lf

_PATIENCE = 60  # seconds: only a broken implementation ever waits this long

FACTOR = 1  # a module-level value the nodes below read
ITEMS = [1]


class Gate:
    """Holds a node inside its call until the test has done its move; hashes to a constant,
    so passing it as a flow input never changes a key."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def inside(self) -> None:
        """Called by the node: tell the test it runs, then wait for its move."""
        self.entered.set()
        assert self.go.wait(_PATIENCE), "the test never let the node go on"

    def meanwhile(self, move: Any) -> None:
        """Once the node runs, make ``move()`` (from the test's thread), then let it go on."""
        assert self.entered.wait(_PATIENCE), "the node never ran"
        move()
        self.go.set()


lf.register_hasher(Gate, lambda gate: "gate")


def _disk_flow(tmp_path, name: str) -> lf.Flow:
    return lf.Flow(name, cache=lf.Cache(memory=None, disk=str(tmp_path / "cache")))


# ------------------------------------------------------------ state changed while a node runs


def test_a_global_rebound_while_the_node_runs_is_not_stored_under_the_old_key(tmp_path):
    global FACTOR
    FACTOR = 1
    flow = _disk_flow(tmp_path, "rebound")

    @flow.node
    def scaled(gate: Gate, x: int = 10) -> int:
        gate.inside()
        return x * FACTOR

    gate = Gate()
    handle = flow.submit("scaled", gate=gate)

    def rebind() -> None:
        global FACTOR
        FACTOR = 2

    gate.meanwhile(rebind)
    run = handle.result(_PATIENCE)
    assert run["scaled"] == 20  # the state it ended in: a later one than it started with
    assert "changed while it ran" in run.nodes["scaled"].reason
    FACTOR = 1
    again = flow.run("scaled", gate=gate)
    assert again["scaled"] == 10
    assert again.nodes["scaled"].status == "completed"


def test_a_global_changed_in_place_while_the_node_runs_is_not_stored_under_the_old_key(tmp_path):
    ITEMS[:] = [1]
    flow = _disk_flow(tmp_path, "mutated")

    @flow.node
    def total(gate: Gate) -> int:
        gate.inside()
        return sum(ITEMS)

    gate = Gate()
    handle = flow.submit("total", gate=gate)
    gate.meanwhile(lambda: ITEMS.append(5))
    assert handle.result(_PATIENCE)["total"] == 6
    ITEMS[:] = [1]
    assert flow.get("total", gate=gate) == 1


def test_a_flow_input_changed_after_submit_returns_is_not_stored_under_its_old_digest(tmp_path):
    flow = _disk_flow(tmp_path, "after-submit")

    @flow.node
    def slow(gate: Gate) -> int:
        gate.inside()
        return 0

    @flow.node
    def total(slow: int, data: list[int]) -> int:
        return slow + sum(data)

    data = [1]
    gate = Gate()
    handle = flow.submit("total", gate=gate, data=data)
    gate.meanwhile(lambda: data.append(5))  # before 'total' even started
    run = handle.result(_PATIENCE)
    assert run["total"] == 6
    assert "input 'data' changed while it ran" in run.nodes["total"].reason
    again = flow.run("total", gate=gate, data=[1])
    assert again["total"] == 1


def test_a_flow_input_changed_by_another_thread_while_the_node_runs_is_not_stored(tmp_path):
    flow = _disk_flow(tmp_path, "during-call")

    @flow.node
    def total(gate: Gate, data: list[int]) -> int:
        gate.inside()
        return sum(data)

    data = [1]
    gate = Gate()
    handle = flow.submit("total", gate=gate, data=data)
    gate.meanwhile(lambda: data.append(5))
    assert handle.result(_PATIENCE)["total"] == 6
    assert flow.get("total", gate=gate, data=[1]) == 1


def test_an_input_file_edited_while_the_node_reads_it_is_not_stored_under_its_old_digest(
        tmp_path):
    flow = _disk_flow(tmp_path, "edited-input")
    path = tmp_path / "numbers.txt"
    path.write_text("1\n")

    @flow.node
    def total(gate: Gate, data: lf.File) -> int:
        gate.inside()
        return sum(int(x) for x in data.path.read_text().split())

    gate = Gate()
    handle = flow.submit("total", gate=gate, data=lf.File(path))
    gate.meanwhile(lambda: path.write_text("1\n5\n"))
    assert handle.result(_PATIENCE)["total"] == 6
    path.write_text("1\n")
    assert flow.get("total", gate=gate, data=lf.File(path)) == 1


def test_a_file_read_by_a_constant_path_edited_while_the_node_runs_is_not_stored(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flow = _disk_flow(tmp_path, "edited-constant")
    (tmp_path / "numbers.txt").write_text("1\n")

    @flow.node
    def total(gate: Gate) -> int:
        gate.inside()
        with open("numbers.txt") as f:
            return sum(int(x) for x in f.read().split())

    gate = Gate()
    handle = flow.submit("total", gate=gate)
    gate.meanwhile(lambda: (tmp_path / "numbers.txt").write_text("1\n5\n"))
    assert handle.result(_PATIENCE)["total"] == 6
    (tmp_path / "numbers.txt").write_text("1\n")
    assert flow.get("total", gate=gate) == 1


# ------------------------------------------------------------ redefinitions from other threads


def _define_answer(flow: lf.Flow, value: int) -> None:
    """(Re)define node 'answer' returning ``value``: one definition site, as a re-run cell."""

    @flow.node
    def answer() -> int:
        return value


def test_a_node_redefined_while_another_thread_plans_a_request_is_used_by_later_requests():
    flow = lf.Flow("replanned", cache=lf.Cache(disk=None))
    _define_answer(flow, 1)
    walked, go = threading.Event(), threading.Event()
    walk = flow._shape  # the plan's walk: held open, the redefinition lands in its middle

    def held_walk(wanted: tuple[str, ...]) -> Any:
        shape = walk(wanted)
        walked.set()
        assert go.wait(_PATIENCE)
        return shape

    flow._shape = held_walk  # type: ignore[method-assign]
    first: list[int] = []
    planning = threading.Thread(target=lambda: first.append(flow.get("answer")))
    planning.start()
    assert walked.wait(_PATIENCE)
    del flow._shape
    _define_answer(flow, 2)
    go.set()
    planning.join(_PATIENCE)
    assert first == [1]  # it started before the redefinition: the old code is its own
    assert flow.get("answer") == 2
