"""Stale hits found by attacking code fingerprints, each kept as a regression test.

Each test does what a notebook user does in the real setting (an IPython shell,
a local module file on disk, a new process against the same disk cache):
compute a node, change something its function depends on, request it again,
and expect what the function computes now. What lazyflow cannot see must warn
and leave the node uncached. Unchanged re-runs must still hit.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import textwrap

import pytest

import lazyflow as lf


@pytest.fixture
def nb(shell, tmp_path, monkeypatch):
    """Run dedented cells in a real IPython shell with a memory-cached flow; a cell that
    sets ``_result`` returns it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    shell.user_ns.update(lf=lf, flow=lf.Flow("attacks", cache=lf.Cache(disk=None)))

    def run(cell: str) -> object:
        shell.run_cell(textwrap.dedent(cell)).raise_error()
        return shell.user_ns.pop("_result", None)

    return run


def request(nb) -> tuple[object, str]:
    """Node 'out''s value and status."""
    return nb("_result = flow.get('out'), flow.last_run.nodes['out'].status")


def after_edit(nb, setup: str, edit: str) -> tuple[object, object, str]:
    """Define, request twice (the second a hit), edit, request: (first, after, status)."""
    nb(setup)
    first, _ = request(nb)
    assert request(nb) == (first, "cached")
    nb(edit)
    after, status = request(nb)
    return first, after, status


def write(path, text: str) -> None:
    """Write a module file whose edit the import system sees at once (a later mtime)."""
    path.write_text(textwrap.dedent(text))
    later = path.stat().st_mtime + 10
    os.utime(path, (later, later))


def test_a_users_wrapper_of_an_installed_function_is_keyed_by_its_own_code(nb):
    # functools.wraps copies np.mean's __module__ ('numpy') onto the user's wrapper
    assert after_edit(nb, """
        import functools, numpy as np
        def doubled(func):
            @functools.wraps(func)
            def wrapper(*args):
                return float(func(*args)) * 2
            return wrapper
        mean = doubled(np.mean)
        @flow.node
        def out():
            return mean([1.0, 3.0])
    """, """
        def doubled(func):
            @functools.wraps(func)
            def wrapper(*args):
                return float(func(*args)) * 3
            return wrapper
        mean = doubled(np.mean)
    """) == (4.0, 6.0, "completed")


def test_a_local_module_read_by_the_node_and_by_a_helper_keys_what_each_reads(nb, tmp_path):
    write(tmp_path / "attack_two.py", "K = 1\ndef f():\n    return 10\n")
    assert after_edit(nb, """
        import importlib, attack_two
        def helper():
            return attack_two.K
        @flow.node
        def out():
            return attack_two.f() + helper()
    """, "attack_two.K = 50") == (11, 60, "completed")


@pytest.mark.parametrize(("setup", "edit"), [
    ("def helper():\n    return helper.scale\nhelper.scale = 1\n"
     "@flow.node\ndef out():\n    return helper()\n", "helper.scale = 2"),
    ("@flow.node\ndef out():\n    return out.scale\nout.scale = 1\n", "out.scale = 2"),
    ("def helper():\n    return helper.table['k']\nhelper.table = {'k': 1}\n"
     "@flow.node\ndef out():\n    return helper()\n", "helper.table['k'] = 2"),
    ("def helper():\n    return getattr(helper, 'scale', 1)\n"
     "@flow.node\ndef out():\n    return helper()\n", "helper.scale = 2"),
], ids=["helper", "node", "mutated-in-place", "set-later"])
def test_an_attribute_of_a_function_that_its_code_reads_counts(nb, setup, edit):
    assert after_edit(nb, setup, edit) == (1, 2, "completed")


def test_an_attribute_of_a_str_subclass_global_counts(nb):
    assert after_edit(nb, """
        class Tag(str):
            pass
        TAG = Tag("a")
        TAG.weight = 1
        @flow.node
        def out():
            return TAG.weight
    """, "TAG.weight = 2") == (1, 2, "completed")


def test_editing_a_metaclass_reruns_a_node_reading_the_class(nb):
    assert after_edit(nb, """
        class Meta(type):
            @property
            def k(cls):
                return 1
        class C(metaclass=Meta):
            pass
        @flow.node
        def out():
            return C.k
    """, "Meta.k = property(lambda cls: 2)") == (1, 2, "completed")


def test_reassigning_a_classs_bases_reruns(nb):
    assert after_edit(nb, """
        class A:
            def v(self):
                return 1
        class B:
            def v(self):
                return 2
        class C(A):
            pass
        @flow.node
        def out():
            return C().v()
    """, "C.__bases__ = (B,)") == (1, 2, "completed")


def test_patching_a_builtin_reruns(nb, monkeypatch):
    monkeypatch.setattr(builtins, "abs", builtins.abs)  # restored after the test
    assert after_edit(nb, """
        @flow.node
        def out():
            return abs(-3)
    """, "import builtins\nbuiltins.abs = lambda x: 42") == (3, 42, "completed")


def test_a_local_modules_module_getattr_counts(nb, tmp_path):
    path = tmp_path / "attack_lazy.py"
    write(path, "def __getattr__(name):\n    return 1\n")
    nb("""
        import importlib, attack_lazy
        @flow.node
        def out():
            return attack_lazy.computed
    """)
    assert request(nb) == (1, "completed")
    write(path, "def __getattr__(name):\n    return 2\n")
    nb("importlib.reload(attack_lazy)")
    assert request(nb) == (2, "completed")


def test_a_module_named_by_a_constant_in_import_module_is_keyed_by_what_is_read(nb, tmp_path):
    write(tmp_path / "attack_named.py", "def f():\n    return 1\n")
    assert after_edit(nb, """
        import importlib
        @flow.node
        def out():
            return importlib.import_module("attack_named").f()
    """, "import attack_named\nattack_named.f = lambda: 2") == (1, 2, "completed")


@pytest.mark.parametrize(("body", "construct"), [
    ("import attack_dict\n    return attack_dict.__dict__['f']()", r"attack_dict\.__dict__"),
    ("import attack_dict, sys\n    for name in ['attack_dict']:\n        return sys.modules[name].f()",
     r"sys\.modules"),
], ids=["module-dict", "sys-modules"])
def test_reading_a_module_by_a_computed_name_warns_and_is_not_cached(nb, tmp_path, body,
                                                                     construct):
    write(tmp_path / "attack_dict.py", "def f():\n    return 1\n")
    nb(f"@flow.node\ndef out():\n    {body}\n")
    with pytest.warns(lf.CacheWarning, match=f"node 'out'.*{construct}.*not cached"):
        assert request(nb) == (1, "completed")
    assert request(nb) == (1, "completed")


def test_reading_sys_modules_by_a_constant_name_or_testing_presence_is_cached(nb):
    nb("""
        import sys
        @flow.node
        def out():
            return ("json" in sys.modules) + (sys.modules.get("sys") is sys)
    """)
    request(nb)
    assert request(nb)[1] == "cached"


_IMPORTS_IN_BODY = """
import sys
import lazyflow as lf
flow = lf.Flow("p", cache=lf.Cache(disk={cache!r}))
@flow.node
def out():
    import attack_body
    return attack_body.f()
run = flow.run("out")
print(run["out"], run.nodes["out"].status)
"""


def test_a_local_module_imported_in_the_body_is_keyed_by_its_file_in_a_new_process(tmp_path):
    module = tmp_path / "attack_body.py"
    script = tmp_path / "run.py"
    script.write_text(_IMPORTS_IN_BODY.format(cache=str(tmp_path / "cache")))

    def run(seed: str) -> list[str]:
        return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                              text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.split()

    write(module, "def f():\n    return 1\n")
    assert run("1") == ["1", "completed"]
    assert run("2") == ["1", "cached"]
    write(module, "def f():\n    return 2\n")
    assert run("3") == ["2", "completed"]


def test_a_node_importing_a_module_in_its_body_has_one_key_before_and_after_loading_it(nb):
    # the first request runs the import; the second must not see another key
    nb("""
        @flow.node
        def out():
            import colorsys
            return colorsys.rgb_to_hsv(1, 0, 0)[0]
    """)
    first = nb("_result = flow.explain('out').rows[0].key")
    request(nb)
    assert request(nb)[1] == "cached"
    assert nb("_result = flow.explain('out').rows[0].key") == first


def test_an_installed_module_imported_in_the_body_is_keyed_by_its_version(nb):
    nb("def f():\n    import json\n    return json.dumps(1)\n")
    components = lf.fingerprint(nb("_result = f")).components
    assert components["module:json"].startswith("json==")


@pytest.mark.parametrize("cell", [
    "import functools, numpy as np\ndef doubled(func):\n    @functools.wraps(func)\n"
    "    def wrapper(*args):\n        return float(func(*args)) * 2\n    return wrapper\n"
    "mean = doubled(np.mean)\n@flow.node\ndef out():\n    return mean([1.0])\n",
    "def helper():\n    return helper.k\nhelper.k = {'a': [1]}\n"
    "@flow.node\ndef out():\n    return helper()['a'][0]\n",
    "class Meta(type):\n    def k(cls):\n        return 1\nclass C(metaclass=Meta):\n    pass\n"
    "@flow.node\ndef out():\n    return C.k()\n",
    "import attack_rerun\ndef helper():\n    return attack_rerun.K\n"
    "@flow.node\ndef out():\n    return attack_rerun.f() + helper() + abs(-1) + len('ab')\n",
    "@flow.node\ndef out():\n    import attack_rerun\n    return attack_rerun.f()\n",
], ids=["wraps-installed", "function-attribute", "metaclass", "module-and-builtins",
        "import-in-body"])
def test_re_running_an_unchanged_cell_still_hits(nb, tmp_path, cell):
    write(tmp_path / "attack_rerun.py", "K = 1\ndef f():\n    return 10\n")
    nb(cell)
    request(nb)
    nb(cell)
    assert request(nb)[1] == "cached"


# --------------------------------------------------------------------------- queues, weak containers

_HOLDERS = {  # (setup, the node's body, an edit that changes what it reads)
    "WeakValueDictionary": ("import weakref\nREG = weakref.WeakValueDictionary()\nREG['x'] = a",
                            "REG['x'].v", "REG['x'] = b"),
    "WeakKeyDictionary": ("import weakref\nREG = weakref.WeakKeyDictionary()\nREG[a] = 1",
                          "sum(REG.values())", "REG[a] = 2"),
    "WeakSet": ("import weakref\nREG = weakref.WeakSet()\nREG.add(a)", "len(REG)", "REG.add(b)"),
    "Queue": ("import queue\nREG = queue.Queue()\nREG.put(1)", "REG.qsize()", "REG.put(2)"),
    "SimpleQueue": ("import queue\nREG = queue.SimpleQueue()\nREG.put(1)", "REG.qsize()",
                    "REG.put(2)"),
}
_OBJECTS = "class Thing:\n    def __init__(self, v):\n        self.v = v\na, b = Thing(1), Thing(2)\n"


@pytest.mark.parametrize("kind", list(_HOLDERS))
def test_a_global_queue_or_weak_container_read_by_a_node_is_not_cached_and_warns(nb, kind):
    setup, body, edit = _HOLDERS[kind]
    nb(f"{_OBJECTS}{setup}\n@flow.node\ndef out():\n    return {body}\n")
    with pytest.warns(lf.CacheWarning, match=f"node 'out': global:REG holds a .*{kind}.*"
                                             "register a hasher.*not cached"):
        assert request(nb) == (1, "completed")
    nb(edit)
    assert request(nb) == (2, "completed")


@pytest.mark.parametrize(("cell", "part"), [
    ("def make(reg):\n    def out():\n        return len(reg)\n    return out\n"
     "flow.node(make(REG))\n", "code:out:closure:reg"),
    ("class Holder:\n    items = REG\n@flow.node\ndef out():\n    return len(Holder.items)\n",
     "class:Holder.items"),
    ("STATE = {'reg': REG}\n@flow.node\ndef out():\n    return len(STATE['reg'])\n",
     "global:STATE"),
    ("size = REG.__len__\n@flow.node\ndef out():\n    return size()\n", "self:"),
    ("def helper(reg=REG):\n    return len(reg)\n@flow.node\ndef out():\n    return helper()\n",
     "helper:helper:defaults"),
], ids=["closure-cell", "class-attribute", "inside-a-dict", "bound-method", "helper-default"])
def test_a_weak_container_reached_by_node_code_is_not_cached(nb, cell, part):
    nb(f"{_OBJECTS}import weakref\nREG = weakref.WeakSet()\nREG.add(a)\n{cell}")
    with pytest.warns(lf.CacheWarning, match=f"node 'out': {part}.*WeakSet.*not cached"):
        assert request(nb) == (1, "completed")
    nb("REG.add(b)")
    assert request(nb) == (2, "completed")


def test_a_queue_inside_a_set_read_by_a_node_is_not_cached(nb):
    # a set's members are digested one by one, each on its own
    nb("""
        import queue
        JOBS = queue.Queue()
        QUEUES = frozenset([JOBS])
        @flow.node
        def out():
            return sum(q.qsize() for q in QUEUES)
    """)
    with pytest.warns(lf.CacheWarning, match="node 'out': global:QUEUES holds a queue.Queue"):
        assert request(nb) == (0, "completed")
    nb("JOBS.put(1)")
    assert request(nb) == (1, "completed")


@pytest.mark.parametrize("make", ["Lock()", "RLock()", "Event()", "Condition()", "Semaphore()",
                                  "Barrier(1)"])
def test_a_global_lock_or_event_used_by_a_helper_still_caches_without_a_warning(nb, make):
    # pytest turns a CacheWarning into an error: none may be given
    nb(f"""
        import threading
        GUARD = threading.{make}
        def helper(x):
            return x + 1 if GUARD is not None else 0
        @flow.node
        def out():
            return helper(1)
    """)
    assert request(nb) == (2, "completed")
    assert request(nb) == (2, "cached")


def test_a_hasher_registered_for_a_weak_container_type_keys_it_by_what_it_returns(nb):
    nb(_OBJECTS + textwrap.dedent("""
        import weakref
        class Registry(weakref.WeakValueDictionary):
            pass
        lf.register_hasher(Registry, lambda r: sorted(r))  # the names it holds
        REG = Registry()
        REG['x'] = a
        @flow.node
        def out():
            return sum(thing.v for thing in REG.values())
    """))
    assert request(nb) == (1, "completed")
    assert request(nb) == (1, "cached")
    nb("REG['y'] = b")
    assert request(nb) == (3, "completed")


def test_a_singledispatch_helper_still_caches_without_a_warning(nb):
    # it keeps its dispatch cache in a WeakKeyDictionary: the package's state, not data
    nb("""
        import functools
        @functools.singledispatch
        def describe(x):
            return "thing"
        @describe.register
        def _(x: int):
            return "int"
        @flow.node
        def out():
            return describe(1)
    """)
    assert request(nb) == ("int", "completed")
    assert request(nb) == ("int", "cached")


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue"])
def test_a_queue_given_as_an_input_is_a_control_channel_keyed_by_its_type(nb, kind):
    nb(f"""
        import queue
        JOBS = queue.{kind}()
        @flow.node
        def out(jobs):
            jobs.put("ran")
            return 1
    """)
    assert nb("_result = flow.get('out', jobs=JOBS)") == 1
    nb("JOBS.put('more')")
    assert nb("_result = flow.get('out', jobs=JOBS), flow.last_run.nodes['out'].status") \
        == (1, "cached")


# --------------------------------------------------------------------------- %autoreload


@pytest.fixture
def autoreload(shell):
    """IPython's own autoreload extension in the test shell, removed afterwards (it has no
    unload, and the shell is one instance for the whole session)."""
    manager = shell.extension_manager
    loaded = set(manager.loaded)
    manager.load_extension("autoreload")
    magics = shell.magics_manager.registry["AutoreloadMagics"]
    yield shell
    shell.events.unregister("pre_run_cell", magics.pre_run_cell)
    shell.events.unregister("post_execute", magics.post_execute_hook)
    manager.loaded.intersection_update(loaded)


_RELOADED = "def f():\n    return {f}\nclass C:\n    def m(self):\n        return {m}\nK = {k}\n"


def test_a_module_autoreload_reloaded_gives_no_stale_file_warning(nb, autoreload, tmp_path):
    # the first reload runs the file again (a new spec); later ones patch the module in place
    path = tmp_path / "reloaded_mod.py"
    write(path, _RELOADED.format(f=1, m=0, k=0))
    nb("""
        %autoreload 2
        import reloaded_mod
        @flow.node
        def out():
            return reloaded_mod.f() * 100 + reloaded_mod.C().m() * 10 + reloaded_mod.K
    """)
    assert request(nb) == (100, "completed")
    for f, m, k in [(2, 0, 0), (3, 0, 0), (3, 4, 0), (3, 4, 5)]:
        write(path, _RELOADED.format(f=f, m=m, k=k))
        # pytest turns a CacheWarning into an error: none may be given
        assert request(nb) == (f * 100 + m * 10 + k, "completed")


def test_a_module_edited_but_not_reloaded_still_warns_once_with_autoreload_off(
        nb, autoreload, tmp_path):
    path = tmp_path / "unreloaded_mod.py"
    write(path, _RELOADED.format(f=1, m=0, k=0))
    node = "@flow.node\ndef out():\n    return unreloaded_mod.f()\n"
    nb(f"%autoreload 2\nimport unreloaded_mod\n{node}")
    assert request(nb) == (1, "completed")
    write(path, _RELOADED.format(f=2, m=0, k=0))
    assert request(nb) == (2, "completed")  # reloaded: no warning
    nb("%autoreload 0")
    write(path, _RELOADED.format(f=3, m=0, k=0))
    nb(f"def other():\n    pass\n{node}")  # a new definition: its fingerprint is taken anew
    with pytest.warns(lf.CacheWarning, match="unreloaded_mod.*changed on disk.*reload"):
        assert request(nb) == (2, "cached")  # the loaded code's result, under its key
    nb(f"def another():\n    pass\n{node}")
    assert request(nb) == (2, "cached")  # once
