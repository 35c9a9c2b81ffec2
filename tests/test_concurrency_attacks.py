"""Attacks on cache hits from other threads, other processes and other entry points.

A hit must be a value the node's function would compute now, in the requesting
context: a value computed while another thread rebound a global, changed a flow
input in place or redefined the node must never be stored under the key of the
state the request started with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import lazyflow as lf
from lazyflow.cache.flights import FLIGHTS

ROOT = Path(__file__).resolve().parents[1]

_PATIENCE = 60  # seconds: only a broken implementation ever waits this long

FACTOR = 1  # a module-level value the nodes below read


def _set_factor(value: int) -> None:
    """Rebind the module-level value, as another thread does while a node runs."""
    global FACTOR
    FACTOR = value
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

    gate.meanwhile(lambda: _set_factor(2))
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


def _summing(tmp_path, name: str) -> tuple[lf.Flow, object]:
    """A flow on the disk tier whose node ``total`` sums the numbers of an ``lf.File``
    input, waiting inside at its gate; and that file, holding ``1``."""
    flow = _disk_flow(tmp_path, name)
    path = tmp_path / "numbers.txt"
    path.write_text("1\n")

    @flow.node
    def total(gate: Gate, data: lf.File) -> int:
        gate.inside()
        return sum(int(x) for x in data.path.read_text().split())

    return flow, path


def test_an_input_file_edited_while_the_node_reads_it_is_not_stored_under_its_old_digest(
        tmp_path):
    flow, path = _summing(tmp_path, "edited-input")

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


def test_a_dependent_of_a_value_computed_from_an_input_changed_meanwhile_links_no_trace(
        tmp_path):
    flow = _disk_flow(tmp_path, "dependent-input")

    @flow.node
    def total(gate: Gate, data: list[int]) -> int:
        gate.inside()
        return sum(data)

    @flow.node
    def report(total: int) -> int:
        return total * 10

    data = [1]
    gate = Gate()
    handle = flow.submit("report", gate=gate, data=data)
    gate.meanwhile(lambda: data.append(5))
    assert handle.result(_PATIENCE)["report"] == 60
    # the trace of 'report' would name the keyed input [1] and lead to the value of [1, 5]
    assert flow.get("report", gate=gate, data=[1]) == 10


def test_a_dependent_of_a_value_computed_while_a_global_was_rebound_links_no_trace(tmp_path):
    global FACTOR
    FACTOR = 1
    flow = _disk_flow(tmp_path, "dependent-global")

    @flow.node
    def factor(gate: Gate) -> int:
        gate.inside()
        return FACTOR

    @flow.node
    def report(factor: int) -> int:
        return factor * 10

    gate = Gate()
    handle = flow.submit("report", gate=gate)

    gate.meanwhile(lambda: _set_factor(2))
    assert handle.result(_PATIENCE)["report"] == 20
    FACTOR = 1
    assert flow.get("report", gate=gate) == 10


def test_map_results_computed_while_a_global_was_rebound_are_not_recalled_later(tmp_path):
    global FACTOR
    FACTOR = 1
    flow = _disk_flow(tmp_path, "map-rebound")

    @flow.node(map="items")
    def scaled(items: int, gate: Gate) -> int:
        gate.inside()
        return items * FACTOR

    gate = Gate()
    handle = flow.submit("scaled", gate=gate, items=[1, 2])

    gate.meanwhile(lambda: _set_factor(10))
    assert handle.result(_PATIENCE)["scaled"] == [10, 20]
    FACTOR = 1
    # a longer list misses the node's entry and recalls what the manifest holds
    assert flow.get("scaled", gate=gate, items=[1, 2, 3]) == [1, 2, 3]


def test_map_results_of_elements_changed_in_place_meanwhile_are_not_recalled_later(tmp_path):
    flow = _disk_flow(tmp_path, "map-mutated")

    @flow.node(map="items")
    def total(items: list[int], gate: Gate) -> int:
        gate.inside()
        return sum(items)

    items = [[1], [2]]
    gate = Gate()
    handle = flow.submit("total", gate=gate, items=items)
    gate.meanwhile(lambda: items[0].append(100))
    assert handle.result(_PATIENCE)["total"] == [101, 2]
    assert flow.get("total", gate=gate, items=[[1], [2], [3]]) == [1, 2, 3]


def test_a_watched_file_edited_during_the_watchs_run_is_run_again_and_never_stored_stale(
        tmp_path):
    flow, path = _summing(tmp_path, "watched")  # the first run waits inside for the edit

    gate = Gate()
    runs: list[lf.Run] = []
    watching = threading.Thread(target=lambda: flow.watch(
        "total", gate=gate, data=lf.File(path), poll=True, interval=0.01, max_runs=2,
        on_run=runs.append))
    watching.start()
    gate.meanwhile(lambda: path.write_text("1\n5\n"))
    watching.join(_PATIENCE)
    assert not watching.is_alive()
    assert [(run["total"], run.nodes["total"].status) for run in runs] == \
        [(6, "completed"), (6, "completed")]  # the edit is seen, and was not stored stale
    path.write_text("1\n")
    assert flow.get("total", gate=gate, data=lf.File(path)) == 1


# ------------------------------------------------------------ redefinitions from other threads


def _define_answer(flow: lf.Flow, value: int) -> None:
    """(Re)define node 'answer' returning ``value``: one definition site, as a re-run cell."""

    @flow.node
    def answer() -> int:
        return value


def _define_offset(flow: lf.Flow, offset: int) -> None:
    """(Re)define node 'shifted', which waits at its gate, adding ``offset``."""

    @flow.node
    def shifted(gate: Gate, n: int) -> int:
        gate.inside()
        return n + offset


def _leader_and_waiter(flow: lf.Flow, gate: Gate) -> tuple[Any, Any]:
    """Two requests of ``shifted`` at once: the leader computing, held inside at ``gate``,
    and the other waiting for its value (single flight)."""
    leader = flow.submit("shifted", gate=gate, n=1)
    assert gate.entered.wait(_PATIENCE)
    started = leader.wait_started(_PATIENCE)
    assert started is not None
    waiter = flow.submit("shifted", gate=gate, n=1)
    assert FLIGHTS.await_waiting(started.nodes["shifted"].key or "", 1, timeout=_PATIENCE)
    return leader, waiter


def test_requests_overlapping_a_redefinition_get_the_code_they_started_with_and_later_the_new(
        tmp_path):
    flow = _disk_flow(tmp_path, "overlap-redefined")
    _define_offset(flow, 100)
    gate = Gate()
    leader, waiter = _leader_and_waiter(flow, gate)
    _define_offset(flow, 200)
    gate.go.set()
    assert leader.result(_PATIENCE)["shifted"] == 101
    waited = waiter.result(_PATIENCE)
    assert waited["shifted"] == 101
    assert waited.nodes["shifted"].status == "cached"  # the leader's value, for the same code
    assert flow.get("shifted", gate=gate, n=1) == 201


def test_a_request_waiting_for_a_value_that_was_not_stored_computes_it_and_stores_it_neither(
        tmp_path):
    global FACTOR
    FACTOR = 1
    flow = _disk_flow(tmp_path, "overlap-rebound")

    @flow.node
    def shifted(gate: Gate, n: int) -> int:
        gate.inside()
        return n + FACTOR

    gate = Gate()
    leader, waiter = _leader_and_waiter(flow, gate)
    FACTOR = 100
    gate.go.set()
    assert leader.result(_PATIENCE)["shifted"] == 101
    waited = waiter.result(_PATIENCE)
    assert (waited["shifted"], waited.nodes["shifted"].status) == (101, "completed")
    FACTOR = 1
    assert flow.get("shifted", gate=gate, n=1) == 2


class FirstCall:
    """Tells a node whether this is its first call; hashes to a constant (no key changes)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def first(self) -> bool:
        with self._lock:
            self.calls += 1
            return self.calls == 1


lf.register_hasher(FirstCall, lambda first: "first-call")


def test_a_request_waiting_for_a_leader_stopped_by_keyboard_interrupt_computes_the_value(
        tmp_path):
    flow = _disk_flow(tmp_path, "interrupted")

    @flow.node
    def doubled(gate: Gate, first: FirstCall, n: int) -> int:
        if first.first():
            gate.inside()
            raise KeyboardInterrupt  # Ctrl-C in the leading request's thread
        return n * 2

    gate, first = Gate(), FirstCall()
    leader = flow.submit("doubled", gate=gate, first=first, n=3)
    assert gate.entered.wait(_PATIENCE)
    started = leader.wait_started(_PATIENCE)
    assert started is not None
    waiter = flow.submit("doubled", gate=gate, first=first, n=3)
    assert FLIGHTS.await_waiting(started.nodes["doubled"].key or "", 1, timeout=_PATIENCE)
    gate.go.set()
    with pytest.raises(KeyboardInterrupt):
        leader.result(_PATIENCE)
    waited = waiter.result(_PATIENCE)  # its claim was released: never blocked for good
    assert (waited["doubled"], waited.nodes["doubled"].status) == (6, "completed")


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


# ------------------------------------------------------------ other processes, other entry points

ANALYSIS = textwrap.dedent("""
    import sys

    import lazyflow as lf

    flow = lf.Flow("analysis")  # the default cache: disk in $LAZYFLOW_CACHE_DIR
    SCALE = 2


    def helper(x):
        return x * SCALE


    @flow.node
    def raw(n: int):
        return list(range(n))


    @flow.node
    def total(raw):
        return helper(sum(raw))


    if __name__ == "__main__":
        run = flow.run("total", n=int(sys.argv[1]))
        print(run.nodes["total"].status, run["total"])
""")


def _python(folder: Path, *args: str, **env: str) -> str:
    """Run this venv's Python in ``folder`` with the cache in ``folder/cache``; its stdout."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env,
                   "LAZYFLOW_CACHE_DIR": str(folder / "cache")}
    environment.pop("LAZYFLOW_HISTORY", None)
    done = subprocess.run([sys.executable, *args], cwd=folder, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _cli_total(folder: Path, flow: str) -> tuple[dict[str, int], str]:
    """``lazyflow run FLOW total -p n=10``: the run's counts and the value of 'total'."""
    script = shutil.which("lazyflow", path=os.path.dirname(sys.executable))
    assert script is not None, "the lazyflow console script is not installed in this venv"
    report = json.loads(_python(folder, script, "run", flow, "total", "-p", "n=10", "--json"))
    return report["counts"], report["values"]["total"]


def test_the_cli_an_import_and_a_main_script_share_results_and_an_edit_reaches_the_cli(
        tmp_path):
    (tmp_path / "analysis.py").write_text(ANALYSIS)
    imported = ("import analysis; r = analysis.flow.run('total', n=10); "
                "print(r.nodes['total'].status, r['total'])")
    assert _python(tmp_path, "-c", imported).split() == ["completed", "90"]
    assert _cli_total(tmp_path, "analysis:flow") == ({"cached": 1}, "90")
    assert _python(tmp_path, "analysis.py", "10").split() == ["cached", "90"]
    module = tmp_path / "analysis.py"
    module.write_text(module.read_text().replace("SCALE = 2", "SCALE = 3"))
    assert _cli_total(tmp_path, "./analysis.py:flow") == ({"cached": 1, "completed": 1}, "135")
    assert _python(tmp_path, "analysis.py", "10").split() == ["cached", "135"]


KILLED_WHILE_STORING = textwrap.dedent('''
    import os
    import signal

    import lazyflow as lf

    flow = lf.Flow("killed", cache=lf.Cache(memory=None, disk=os.environ["CACHE"]))


    class Payload:
        """Kills its process when pickled with KILL=1: by the disk tier, storing the value."""

        def __init__(self, blob):
            self.blob = blob

        def __reduce__(self):
            if os.environ.get("KILL") == "1":
                os.kill(os.getpid(), signal.SIGKILL)
            return (Payload, (self.blob,))


    lf.register_hasher(Payload, lambda payload: lf.hash_value(payload.blob))


    @flow.node
    def big(n: int):
        return [b"x" * n, Payload(b"y" * n), b"z" * n]


    run = flow.run("big", n=2_000_000)
    value = run["big"]
    print(run.nodes["big"].status, len(value[0]), len(value[1].blob), len(value[2]))
''')


def test_a_process_killed_while_storing_a_value_leaves_no_entry_another_process_reads(tmp_path):
    (tmp_path / "killed.py").write_text(KILLED_WHILE_STORING)
    cache = str(tmp_path / "cache")
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "CACHE": cache, "KILL": "1"}
    killed = subprocess.run([sys.executable, "killed.py"], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # SIGKILL, half-way through its store
    whole = "2000000 2000000 2000000"
    assert _python(tmp_path, "killed.py", CACHE=cache).strip() == f"completed {whole}"
    assert _python(tmp_path, "killed.py", CACHE=cache).strip() == f"cached {whole}"
