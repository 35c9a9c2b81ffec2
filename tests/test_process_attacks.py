"""Attacks on what the process executor computes and caches: a worker is a separate
interpreter that imported its modules once, gets functions of every kind by value or by
reference, may raise what does not unpickle, and may die mid-node. Each value a run
returns or stores must be the one the node's function computes in this process now."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import uuid

import pytest

import lazyflow as lf
from lazyflow.executors.codecheck import WorkerCodeError
from lazyflow.executors.processes import ProcessExecutor, WorkerLostError


@pytest.fixture
def pool():
    """A private pool of one worker (its modules stay imported between runs)."""
    with ProcessExecutor(1) as executor:
        yield executor


@pytest.fixture
def module(tmp_path, monkeypatch):
    """A user module in a file of its own, importable here and by the workers."""
    name = f"settings_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    path.write_text("N = 3\n\ndef helper(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = importlib.import_module(name)
    yield loaded, path
    importlib.invalidate_caches()


def test_a_module_global_set_at_run_time_fails_a_process_node_and_caches_nothing_wrong(
        tmp_path, module, pool):
    settings, _ = module
    flow = lf.Flow("globals", cache=lf.Cache(disk=tmp_path / "cache"))

    @flow.node
    def scaled():
        return settings.N * 10

    assert flow.get("scaled", executor=pool) == 30  # the worker imports the module now
    settings.N = 5  # a worker never sees this: its module comes from the file
    with pytest.raises(WorkerCodeError, match=r"node 'scaled'.*global:settings_\w+\.N"):
        flow.get("scaled", executor=pool)
    assert flow.get("scaled") == 50  # nothing was stored under the key of N = 5


def test_a_module_global_read_through_a_closure_cell_is_part_of_the_key(module, flow):
    settings, _ = module  # a cell of this function: the node reads settings.N through it

    @flow.node
    def scaled():
        return settings.N * 10

    assert flow.get("scaled") == 30
    settings.N = 5
    assert flow.get("scaled") == 50


def test_a_module_edited_and_reloaded_here_is_run_with_its_new_code_by_a_warm_worker(
        module, pool, flow):
    settings, path = module

    @flow.node
    def bumped():
        return settings.helper(1)

    assert flow.get("bumped", executor=pool) == 2
    path.write_text("N = 3\n\ndef helper(x):\n    return x + 100\n")  # another size: no stale pyc
    importlib.reload(settings)
    assert flow.get("bumped", executor=pool) == 101


def test_closures_partials_bound_methods_and_decorated_functions_recompute_when_edited(
        flow, pool):
    class Scale:
        def __init__(self, factor):
            self.factor = factor

        def times(self, x=2):
            return x * self.factor

    def traced(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)
        return wrapper

    offset = [1]
    scale = Scale(3)

    def shift(x, by):
        return x + by

    def closure(x=2):
        return x + offset[0]

    flow.node(closure, name="closure")
    flow.node(functools.partial(shift, by=10), name="partial")
    flow.node(scale.times, name="bound")
    flow.node(traced(closure), name="decorated")
    names = ["closure", "partial", "bound", "decorated"]
    assert flow.get(names, x=2, executor=pool) == {
        "closure": 3, "partial": 12, "bound": 6, "decorated": 3}

    offset[0], scale.factor = 5, 4
    flow.node(functools.partial(shift, by=20), name="partial")
    run = flow.run(names, x=2, executor=pool)
    assert {name: run[name] for name in names} == {
        "closure": 7, "partial": 22, "bound": 8, "decorated": 7}
    assert {run.nodes[name].status for name in names} == {"completed"}


def test_a_partial_node_is_a_hit_on_its_second_request(flow, pool):
    def shift(x, by):
        return x + by

    flow.node(functools.partial(shift, by=10), name="shifted")
    assert flow.get("shifted", x=1, executor=pool) == 11
    # hashing a partial used to make its instance dict, which changed its digest once
    assert flow.run("shifted", x=1, executor=pool).nodes["shifted"].status == "cached"


def test_a_lazy_input_swallowed_by_a_bare_except_in_a_worker_is_not_what_is_cached(
        flow, pool):
    @flow.node
    def expensive():
        return 42

    @flow.node
    def guarded(expensive: lf.Lazy[int]):
        try:
            return expensive()
        except:  # noqa: E722  (the attack: a bare except around a lazy input)
            return -1

    assert flow.get("guarded", executor=pool) == 42
    assert flow.run("guarded", executor=pool).nodes["guarded"].status == "cached"
    assert flow.get("guarded") == 42


class _Mismatched(Exception):
    """An exception whose ``__init__`` does not take what it passes up as ``args``."""

    def __init__(self, code, detail):
        super().__init__(f"{code}: {detail}")
        self.code = code


def test_an_exception_that_pickles_but_does_not_unpickle_reaches_the_caller_as_itself(
        flow, pool):
    @flow.node
    def refused():
        raise _Mismatched(404, "no such thing")

    with pytest.raises(_Mismatched, match="404: no such thing") as raised:
        flow.get("refused", executor=pool)
    assert raised.value.code == 404
    assert any("node 'refused'" in note for note in raised.value.__notes__)


class _Unbuildable:
    def __reduce__(self):
        return int, ("not a number",)


def test_a_value_that_does_not_unpickle_here_fails_its_node_with_a_clear_error(flow, pool):
    @flow.node
    def odd():
        return _Unbuildable()

    with pytest.raises(TypeError, match="node 'odd'.*cannot be rebuilt in this process"):
        flow.get("odd", executor=pool)


def test_a_worker_killed_mid_node_stores_nothing_and_a_rerun_computes_the_value(
        tmp_path, pool):
    flow = lf.Flow("killed", cache=lf.Cache(disk=tmp_path / "cache"))
    first = tmp_path / "first-call"

    @flow.node
    def fragile():
        if not first.exists():
            first.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return "done"

    with pytest.raises(WorkerLostError, match="node 'fragile'"):
        flow.get("fragile", executor=pool)
    assert [row.action for row in flow.explain("fragile").rows] == ["run"]
    run = flow.run("fragile", executor=pool)
    assert (run["fragile"], run.nodes["fragile"].status) == ("done", "completed")
