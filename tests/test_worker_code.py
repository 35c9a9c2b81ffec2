"""A worker in another process runs the code a node's key was taken from, or nothing.

Python imports a module once: a worker process that imported a local module before it
was edited (and reloaded in the kernel) would compute the old code's value under the
new code's key — a stale hit for ever after. Workers check the function they hold
against the key's fingerprint before calling it (``executors/codecheck.py``).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import uuid

import cloudpickle
import pytest

import lazyflow as lf
from lazyflow.executors.codecheck import WorkerCodeError
from lazyflow.executors.processes import ProcessExecutor


@pytest.fixture
def local_module(tmp_path, monkeypatch):
    """Write a module file next to the 'notebook' and import it; returns (module, write)."""
    name = f"worker_mod_{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.py"
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(body: str) -> None:
        path.write_text(textwrap.dedent(body))
        importlib.invalidate_caches()

    write("SCALE = 1\n\ndef f(x):\n    return x * SCALE + 1\n")
    module = importlib.import_module(name)
    yield module, write
    sys.modules.pop(name, None)


def _flow(module, cache: lf.Cache) -> lf.Flow:
    flow = lf.Flow("worker_code", cache=cache)
    flow.node(module.f, name="y")
    return flow


@pytest.fixture
def pool():
    with ProcessExecutor(1) as executor:  # one worker: every task meets the same one
        yield executor


def test_a_worker_that_imported_a_module_before_its_edit_is_replaced_and_runs_the_new_code(
        local_module, pool, tmp_path):
    module, write = local_module
    cache = lf.Cache(memory="1GB", disk=str(tmp_path / "cache"), remote=None)
    assert _flow(module, cache).get("y", x=1, executor=pool) == 2
    write("SCALE = 1\n\ndef f(x):\n    return x * SCALE + 100\n")
    importlib.reload(module)
    assert _flow(module, cache).get("y", x=1, executor=pool) == 101
    assert _flow(module, cache).get("y", x=1) == 101  # the stored entry holds it too


def test_a_module_attribute_set_from_the_notebook_is_refused_by_workers_and_nothing_is_stored(
        local_module, pool, tmp_path):
    module, _ = local_module
    module.SCALE = 5  # the kernel's module now differs from its file
    cache = lf.Cache(memory="1GB", disk=str(tmp_path / "cache"), remote=None)
    with pytest.raises(WorkerCodeError, match=r"node 'y'.*SCALE.*even a fresh worker"):
        _flow(module, cache).get("y", x=1, executor=pool)
    run = _flow(module, cache).run("y", x=1)  # here, in this process
    assert (run.nodes["y"].status, run["y"]) == ("completed", 6)  # not a hit: none stored


def test_a_kernel_that_did_not_reload_an_edited_module_is_told_so_not_given_the_files_value(
        local_module, pool, tmp_path):
    module, write = local_module
    write("SCALE = 1\n\ndef f(x):\n    return x * SCALE + 100\n")  # not reloaded here
    cache = lf.Cache(memory="1GB", disk=None, remote=None)
    with pytest.raises(WorkerCodeError, match="reload the module"):
        _flow(module, cache).get("y", x=1, executor=pool)


def test_a_worker_holding_the_kernels_code_runs_it_without_a_refusal(local_module, pool):
    module, _ = local_module
    cache = lf.Cache(memory="1GB", disk=None, remote=None)
    pids = set()
    for x in range(3):
        assert _flow(module, cache).get("y", x=x, executor=pool) == x + 1
        pids.update(pool.pids())
    assert len(pids) == 1  # never restarted


# --------------------------------------------------------------------------- fingerprints
# that a worker computes as the kernel did: the check must not refuse the same code

_SHAPES = '''
import functools, sys
sys.path.insert(0, {folder!r})
import {module} as helpers
mean = 3          # a global named like an attribute the code reads
FACTOR = 2
def g(x): return x * FACTOR
def deco(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k): return fn(*a, **k)
    return wrapper
@deco
def decorated(x): return g(x) + helpers.f(x)
def uses_attribute(xs): return xs.mean() if hasattr(xs, "mean") else sum(xs)
class Model:
    def __init__(self, a): self.a = a
    def predict(self, x): return g(x) + self.a
def outer(k):
    def inner(x): return x + k + FACTOR
    return inner
def local_class():
    class Tree:  # defined in a function: cloudpickle rebuilds it without its qualified name
        def __init__(self, depth): self.depth = depth
        def grow(self): return Tree(self.depth + 1)
    return Tree(1).grow
SHAPES = {{"decorated": decorated, "attribute": uses_attribute, "method": Model(2).predict,
          "partial": functools.partial(g), "closure": outer(4), "lambda": lambda x: g(x),
          "by reference": helpers.f, "local class": local_class()}}
'''


def test_every_function_shape_fingerprints_the_same_in_a_worker_after_pickling(
        local_module, tmp_path):
    module, _ = local_module
    script = _SHAPES.format(folder=str(tmp_path), module=module.__name__)
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(script, "<notebook>", "exec"), namespace)  # functions of a '__main__'
    shapes = namespace["SHAPES"]
    expected = {name: lf.fingerprint(fn).digest for name, fn in shapes.items()}
    blob = tmp_path / "shapes.pkl"
    blob.write_bytes(cloudpickle.dumps(shapes))
    worker = ("import sys, json, cloudpickle; sys.path.insert(0, sys.argv[2]); "
              "import lazyflow as lf; shapes = cloudpickle.loads(open(sys.argv[1], 'rb').read()); "
              "print(json.dumps({n: lf.fingerprint(f).digest for n, f in shapes.items()}))")
    out = subprocess.run([sys.executable, "-c", worker, str(blob), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    import json

    assert json.loads(out) == expected


def test_an_attribute_named_like_a_global_does_not_key_the_function():
    namespace: dict[str, object] = {}
    exec("mean = 1\ndef f(xs):\n    return xs.mean()\n", namespace)
    before = lf.fingerprint(namespace["f"]).digest
    namespace["mean"] = 2
    assert lf.fingerprint(namespace["f"]).digest == before


def test_a_partial_hashes_the_same_the_second_time():
    import functools

    def g(x):
        return x

    p = functools.partial(g, 1)
    assert lf.hash_value(p) == lf.hash_value(p)


# --------------------------------------------------------------------------- Dask


@pytest.mark.cluster
def test_a_dask_worker_holding_an_old_module_refuses_and_by_value_modules_run_the_new_code(
        local_module, dask_client, tmp_path):
    module, write = local_module
    folder = str(tmp_path)
    dask_client.run(lambda: sys.path.insert(0, folder))
    try:
        cache = lf.Cache(memory="1GB", disk=None, remote=None)
        assert _flow(module, cache).get("y", x=1, executor=dask_client) == 2
        name = module.__name__
        dask_client.run(lambda: importlib.import_module(name) and None)  # every worker has it
        write("SCALE = 1\n\ndef f(x):\n    return x * SCALE + 100\n")
        importlib.reload(module)
        with pytest.raises(WorkerCodeError, match=r"client\.restart\(\)"):
            _flow(module, cache).get("y", x=1, executor=dask_client)
        cloudpickle.register_pickle_by_value(module)  # as the error advises
        try:
            assert _flow(module, cache).get("y", x=1, executor=dask_client) == 101
        finally:
            cloudpickle.unregister_pickle_by_value(module)
    finally:
        dask_client.run(lambda: sys.path.remove(folder))


@pytest.mark.cluster
def test_a_dask_graph_step_holding_an_old_module_refuses_and_stores_nothing(
        local_module, dask_client, tmp_path):
    module, write = local_module
    folder, name = str(tmp_path), module.__name__
    dask_client.run(lambda: sys.path.insert(0, folder))
    try:
        cache = lf.Cache(memory="1GB", disk=None, remote=None)

        def chain() -> lf.Flow:  # x -> y: sent to the cluster as one graph
            flow = lf.Flow("worker_code_graph", cache=cache)
            flow.node(lambda start: start * 10, name="x")
            flow.node(module.f, name="y")
            return flow

        assert chain().get("y", start=1, executor=dask_client) == 11
        dask_client.run(lambda: importlib.import_module(name) and None)
        write("SCALE = 1\n\ndef f(x):\n    return x * SCALE + 100\n")
        importlib.reload(module)
        with pytest.raises(WorkerCodeError, match="node 'y'"):
            chain().get("y", start=2, executor=dask_client)
        assert chain().get("y", start=2) == 120  # computed here: nothing was stored
    finally:
        dask_client.run(lambda: sys.path.remove(folder))


def test_a_task_naming_what_a_worker_cannot_import_fails_its_node_saying_so(
        pool, flow, monkeypatch):
    import functools

    @functools.lru_cache
    def lookup(n):  # an lru_cache wrapper travels by name: __main__.lookup
        return n + 1

    lookup.__module__, lookup.__qualname__ = "__main__", "lookup_only_here"
    monkeypatch.setattr(sys.modules["__main__"], "lookup_only_here", lookup, raising=False)
    flow.node(lambda n: lookup(n), name="looked_up")
    with pytest.raises(TypeError, match=r"node 'looked_up' cannot be rebuilt in a worker "
                                         r"process \(AttributeError.*lookup_only_here"):
        flow.get("looked_up", n=1, executor=pool)
    assert pool.pids()  # the worker lives on for the next task
