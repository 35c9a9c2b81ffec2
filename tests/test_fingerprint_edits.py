"""Editing what a node uses, as a notebook user does, re-runs it: a real IPython shell.

Each test defines a node and what it uses in shell cells, requests it, edits one
thing the node depends on in a later cell, and requests it again. A cache hit
after the edit would be a value the node no longer computes: the cardinal sin.
Edits the key cannot see must warn and leave the node uncached.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


@pytest.fixture
def nb(shell, calls, tmp_path, monkeypatch):
    """Run dedented cells in a real IPython shell with a memory-cached flow and a counter."""
    monkeypatch.syspath_prepend(str(tmp_path))
    shell.user_ns.update(lf=lf, calls=calls, flow=lf.Flow("edits", cache=lf.Cache(disk=None)))

    def run(cell: str) -> object:
        result = shell.run_cell(textwrap.dedent(cell))
        result.raise_error()
        return result.result

    run.ns = shell.user_ns  # type: ignore[attr-defined]
    return run


def runs_after_edit(nb, calls, setup: str, edit: str, node: str = "out", request: str = "") -> int:
    """How often ``node`` ran over: request, request again, edit, request."""
    nb(setup)
    get = f"flow.get({node!r}{', ' + request if request else ''})"
    first = nb(get)
    nb(get)
    assert calls[node] == 1, "the second request must be a hit"
    nb(edit)
    after = nb(get)
    assert after is not None
    return calls[node], first, after


def test_two_global_lambdas_are_two_parts_and_editing_either_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        inc = lambda x: x + 1
        dbl = lambda x: x * 2
        @flow.node
        def out():
            calls["out"] += 1
            return dbl(inc(1))
    """, "dbl = lambda x: x * 3")
    assert (count, first, after) == (2, 4, 6)


def test_two_closures_from_one_factory_are_two_parts(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        def times(k):
            def scaled(x):
                return x * k
            return scaled
        double, triple = times(2), times(3)
        @flow.node
        def out():
            calls["out"] += 1
            return double(1) + triple(1)
    """, "triple = times(4)")
    assert (count, first, after) == (2, 5, 6)


def test_a_global_of_another_module_sharing_a_name_is_its_own_part(nb, calls, tmp_path):
    (tmp_path / "other_consts.py").write_text("K = 10\ndef scale(x):\n    return x * K\n")
    count, first, after = runs_after_edit(nb, calls, """
        import other_consts
        from other_consts import scale
        K = 1
        @flow.node
        def out():
            calls["out"] += 1
            return scale(K)
    """, "other_consts.K = 20")
    assert (count, first, after) == (2, 10, 20)


@pytest.mark.parametrize(("setup", "edit", "values"), [
    ("from functools import partial\nfrom operator import mul\nf, arg = partial(mul, 2), 1",
     "f = partial(mul, 3)", (2, 3)),
    ("from functools import partial\ndef g(a, b):\n    return a * b\nf, arg = partial(g, 2), 1",
     "f = partial(g, 3)", (2, 3)),
    ("from operator import itemgetter\nf, arg = itemgetter(0), (1, 2)", "f = itemgetter(1)",
     (1, 2)),
    ("import numpy as np\nf, arg = np.vectorize(lambda v: v + 1), 1",
     "f = np.vectorize(lambda v: v + 2)", (2, 3)),
    ("import numpy as np\nf, arg = np.poly1d([1, 0]), 1", "f = np.poly1d([2, 0])", (1, 2)),
], ids=["partial-of-builtin", "partial-of-user-function", "itemgetter", "vectorize", "poly1d"])
def test_callable_values_from_packages_are_keyed_by_their_state(nb, calls, setup, edit, values):
    count, first, after = runs_after_edit(nb, calls, setup + """
        @flow.node
        def out():
            calls["out"] += 1
            return int(f(arg))
    """.replace("\n        ", "\n"), edit)
    assert (count, first, after) == (2, *values)


def test_a_decorators_argument_counts(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        import functools
        def times(k):
            def deco(func):
                @functools.wraps(func)
                def wrapper(x):
                    return func(x) * k
                return wrapper
            return deco
        @times(2)
        def helper(x):
            return x + 1
        @flow.node
        def out():
            calls["out"] += 1
            return helper(1)
    """, """
        @times(3)
        def helper(x):
            return x + 1
    """)
    assert (count, first, after) == (2, 4, 6)


def test_a_decorators_body_counts(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        import functools
        def shifted(func):
            @functools.wraps(func)
            def wrapper(x):
                return func(x) + 1
            return wrapper
        @shifted
        def helper(x):
            return x
        @flow.node
        def out():
            calls["out"] += 1
            return helper(1)
    """, """
        def shifted(func):
            @functools.wraps(func)
            def wrapper(x):
                return func(x) + 100
            return wrapper
        @shifted
        def helper(x):
            return x
    """)
    assert (count, first, after) == (2, 2, 101)


def test_editing_an_lru_cached_helper_reruns_its_caller(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        import functools
        @functools.lru_cache
        def helper(x):
            return x + 1
        @flow.node
        def out():
            calls["out"] += 1
            return helper(1)
    """, """
        @functools.lru_cache
        def helper(x):
            return x + 2
    """)
    assert (count, first, after) == (2, 2, 3)


def test_a_decorated_node_is_keyed_by_its_decorator_too(nb, calls):
    nb("""
        import functools
        def times(k):
            def deco(func):
                @functools.wraps(func)
                def wrapper():
                    return func() * k
                return wrapper
            return deco
        @flow.node
        @times(2)
        def out():
            calls["out"] += 1
            return 1
    """)
    assert nb("flow.get('out')") == 2
    nb("""
        @flow.node
        @times(3)
        def out():
            calls["out"] += 1
            return 1
    """)
    assert (nb("flow.get('out')"), calls["out"]) == (3, 2)


def test_editing_a_base_class_method_reruns_a_node_using_the_subclass(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class Base:
            def value(self):
                return 1
        class Child(Base):
            pass
        @flow.node
        def out():
            calls["out"] += 1
            return Child().value()
    """, """
        class Base:
            def value(self):
                return 2
        class Child(Base):
            pass
    """)
    assert (count, first, after) == (2, 1, 2)


def test_editing_a_nested_class_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class Outer:
            class Inner:
                K = 1
            def value(self):
                return self.Inner.K
        @flow.node
        def out():
            calls["out"] += 1
            return Outer().value()
    """, "Outer.Inner.K = 2")
    assert (count, first, after) == (2, 1, 2)


def test_editing_an_enum_members_value_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        import enum
        class Level(enum.Enum):
            LOW = 1
        @flow.node
        def out():
            calls["out"] += 1
            return Level.LOW.value
    """, """
        class Level(enum.Enum):
            LOW = 5
    """)
    assert (count, first, after) == (2, 1, 5)


def test_monkeypatching_a_method_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class M:
            def f(self):
                return 1
        @flow.node
        def out():
            calls["out"] += 1
            return M().f()
    """, "M.f = lambda self: 2")
    assert (count, first, after) == (2, 1, 2)


def test_adding_an_attribute_to_a_class_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class M:
            def f(self):
                return getattr(self, "extra", 0)
        @flow.node
        def out():
            calls["out"] += 1
            return M().f()
    """, "M.extra = 7")
    assert (count, first, after) == (2, 0, 7)


def test_walking_an_enum_never_walks_the_standard_librarys_enum_module(nb):
    nb("""
        import enum
        class Level(enum.IntEnum):
            LOW = 1
        def f():
            return Level.LOW
    """)
    components = lf.fingerprint(nb.ns["f"]).components
    assert not [c for c in components if c.startswith(("global:value", "global:_"))]
    assert any(c.startswith("base:") and "enum" in v for c, v in components.items())


def test_editing_a_local_module_and_reloading_it_reruns(nb, calls, tmp_path):
    (tmp_path / "mymod_a.py").write_text("K = 1\ndef f(x):\n    return x + K\n")
    count, first, after = runs_after_edit(nb, calls, """
        import importlib
        import mymod_a
        @flow.node
        def out():
            calls["out"] += 1
            return mymod_a.f(0) * 10 + mymod_a.K
    """, "open(mymod_a.__file__, 'w').write('K = 2\\ndef f(x):\\n    return x + 100\\n')\n"
         "importlib.reload(mymod_a)")
    assert (count, first, after) == (2, 11, 1002)


def test_a_module_imported_inside_the_node_is_keyed_by_what_it_reads(nb, calls, tmp_path):
    (tmp_path / "mymod_b.py").write_text("def f():\n    return 1\n")
    count, first, after = runs_after_edit(nb, calls, """
        @flow.node
        def out():
            import mymod_b
            calls["out"] += 1
            return mymod_b.f()
    """, "import mymod_b\nmymod_b.f = lambda: 2")
    assert (count, first, after) == (2, 1, 2)


def test_a_local_module_changed_on_disk_but_not_reloaded_warns_and_keeps_the_loaded_key(
        nb, calls, tmp_path):
    path = tmp_path / "mymod_c.py"
    path.write_text("def f():\n    return 1\n")
    nb("""
        import mymod_c
        @flow.node
        def out():
            calls["out"] += 1
            return mymod_c.f()
    """)
    assert nb("flow.get('out')") == 1
    path.write_text("def f():\n    return 222\n")
    nb("def other(): pass\n@flow.node\ndef out():\n    calls['out'] += 1\n    return mymod_c.f()")
    with pytest.warns(lf.CacheWarning, match="mymod_c.*changed on disk.*reload"):
        assert nb("flow.get('out')") == 1  # the loaded code's result, under the loaded key


def test_editing_a_local_module_is_seen_by_a_new_process(tmp_path):
    (tmp_path / "mymod_d.py").write_text("def f():\n    return 1\n")
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import lazyflow as lf, mymod_d
        flow = lf.Flow("p", cache=lf.Cache(disk={str(tmp_path / 'cache')!r}))
        @flow.node
        def out():
            return mymod_d.f()
        run = flow.run("out")
        print(run["out"], run.nodes["out"].status)
    """))

    def run() -> str:
        return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout.split()

    assert run() == ["1", "completed"]
    assert run() == ["1", "cached"]
    (tmp_path / "mymod_d.py").write_text("def f():\n    return 2\n")
    assert run() == ["2", "completed"]


def test_a_bound_method_global_is_keyed_by_its_instance(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class Scorer:
            def __init__(self, k):
                self.k = k
            def score(self, x):
                return x * self.k
        score = Scorer(2).score
        @flow.node
        def out():
            calls["out"] += 1
            return score(1)
    """, "score = Scorer(3).score")
    assert (count, first, after) == (2, 2, 3)


def test_a_bound_builtin_method_is_keyed_by_its_object(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        table = {"a": 1}
        lookup = table.get
        @flow.node
        def out():
            calls["out"] += 1
            return lookup("a")
    """, "table['a'] = 5")
    assert (count, first, after) == (2, 1, 5)


def test_a_node_made_from_a_bound_method_sees_its_instance_change(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class Model:
            def __init__(self):
                self.k = 1
            def out(self):
                calls["out"] += 1
                return self.k
        model = Model()
        flow.node(model.out)
    """, "model.k = 5")
    assert (count, first, after) == (2, 1, 5)


def test_editing_a_global_read_by_a_helper_in_a_tuple_reruns(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        K = 1
        def add_k(x):
            return x + K
        STEPS = (add_k,)
        @flow.node
        def out():
            calls["out"] += 1
            v = 0
            for step in STEPS:
                v = step(v)
            return v
    """, "K = 2")
    assert (count, first, after) == (2, 1, 2)


def test_a_node_made_from_a_callable_object_sees_its_state_change(nb, calls):
    count, first, after = runs_after_edit(nb, calls, """
        class Net:
            def __init__(self, k):
                self.k = k
            def __call__(self):
                calls["out"] += 1
                return self.k
        net = Net(2)
        flow.node(net, name="out")
    """, "net.k = 5")
    assert (count, first, after) == (2, 2, 5)


def test_a_callable_object_node_hits_in_a_new_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import lazyflow as lf
        class Net:
            def __init__(self, k):
                self.k = k
            def __call__(self):
                return self.k
        flow = lf.Flow("p", cache=lf.Cache(disk={str(tmp_path / 'cache')!r}))
        flow.node(Net(2), name="net")
        print(flow.run("net").nodes["net"].status)
    """))

    def run() -> str:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              check=True).stdout.strip()

    assert (run(), run()) == ("completed", "cached")


def test_partial_nodes_over_arrays_that_differ_past_any_repr_are_different_nodes():
    import functools

    import numpy as np

    def total(a):
        return float(a.sum())

    a, b = np.zeros(10_000), np.zeros(10_000)
    b[5_000] = 1.0
    flow = lf.Flow("partials", cache=lf.Cache(disk=None))
    flow.node(functools.partial(total, a), name="sum_a")
    flow.node(functools.partial(total, b), name="sum_b")
    assert flow.get(["sum_a", "sum_b"]) == {"sum_a": 0.0, "sum_b": 1.0}
    assert flow.last_run.nodes["sum_a"].key != flow.last_run.nodes["sum_b"].key


@pytest.mark.parametrize("cell", [
    "class Cfg:\n    def k(self):\n        return 1\nparam = Cfg",
    "import enum\nclass Cfg(enum.Enum):\n    A = 1\n    def k(self):\n        return 1\n"
    "param = Cfg.A",
    "import dataclasses\n@dataclasses.dataclass\nclass Cfg:\n    a: int = 0\n"
    "    def k(self):\n        return 1\nparam = Cfg()",
], ids=["class", "enum-member", "dataclass-instance"])
def test_a_parameter_carrying_code_is_keyed_by_that_code(nb, calls, cell):
    nb(cell)
    nb("""
        @flow.node
        def out(param):
            calls["out"] += 1
            return param.k(param) if isinstance(param, type) else param.k()
    """)
    assert nb("flow.get('out', param=param)") == 1
    nb(cell.replace("return 1", "return 2"))
    assert (nb("flow.get('out', param=param)"), calls["out"]) == (2, 2)


@pytest.mark.parametrize(("body", "construct"), [
    ("return globals()['K']", "globals"),
    ("return eval('K')", "eval"),
    ("import dyn_mod\n    name = 'pi'\n    return getattr(dyn_mod, name)", "getattr"),
])
def test_dynamic_lookups_warn_naming_the_node_and_are_not_cached(nb, calls, tmp_path, body,
                                                                  construct):
    (tmp_path / "dyn_mod.py").write_text("pi = 3\n")
    nb(f"K = 1\n@flow.node\ndef out():\n    calls['out'] += 1\n    {body}\n")
    with pytest.warns(lf.CacheWarning, match=f"node 'out'.*{construct}.*not cached"):
        nb("flow.get('out')")
    nb("flow.get('out')")
    assert calls["out"] == 2
    assert "not cached" in nb("flow.explain('out')").rows[0].reason


def test_methods_named_like_dynamic_builtins_and_constant_getattr_are_not_dynamic(nb):
    nb("""
        import math
        def f(model, name):
            model.eval()
            return getattr(math, "pi") + getattr(math, name)  # math is keyed by its version
    """)
    assert not lf.fingerprint(nb.ns["f"]).volatile


def test_a_node_reading_environment_variables_warns(nb):
    nb("import os\n@flow.node\ndef out():\n    return os.environ.get('HOME')\n")
    with pytest.warns(lf.CacheWarning, match="node 'out'.*environment variables"):
        nb("flow.get('out')")


def test_an_instance_of_a_class_whose_method_reads_an_unhashable_global_is_still_a_value(nb):
    nb("""
        STREAM = (i for i in range(3))
        class Reader:
            def __init__(self, k):
                self.k = k
            def next(self):
                return next(STREAM)
    """)
    assert lf.hash_value(nb.ns["Reader"](1)) == lf.hash_value(nb.ns["Reader"](1))
    assert lf.hash_value(nb.ns["Reader"](1)) != lf.hash_value(nb.ns["Reader"](2))


def test_a_function_value_whose_reads_cannot_be_seen_cannot_be_hashed(nb):
    nb("def dyn():\n    return globals()['K']\n")
    with pytest.raises(lf.HashingError, match="dyn.*globals"):
        lf.hash_value(nb.ns["dyn"])


_FINGERPRINTS = """
import enum, functools, operator
import lazyflow as lf

TAGS = {"alpha", "beta", "gamma", "delta"}
class Level(enum.Enum):
    LOW = frozenset({"x", "y", "z"})
class Model:
    options = {"a", "b", "c"}
    def fit(self, x):
        return x in TAGS or x in self.options
scale = functools.partial(operator.mul, 2)
def node(x):
    return Model().fit(x), Level.LOW, scale(3), x in {"p", "q", "r"}
print(lf.fingerprint(node).digest, lf.hash_value(Model()), lf.hash_value(Level.LOW))
"""


def test_fingerprints_are_equal_across_processes_and_hash_seeds(tmp_path):
    script = tmp_path / "fingerprints.py"
    script.write_text(_FINGERPRINTS)
    outputs = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              check=True, env={**os.environ,
                                               "PYTHONHASHSEED": seed}).stdout
               for seed in ("0", "1", "4242")}
    assert len(outputs) == 1
