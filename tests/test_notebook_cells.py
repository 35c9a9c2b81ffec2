"""Static analysis of cells: reads before writes, outputs, code names, normalized digest."""

from __future__ import annotations

import ast
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from IPython.core.inputtransformer2 import TransformerManager

from lazyflow.errors import OutputError
from lazyflow.notebook.cells import CellFunction, Magic, analyse

ipython = TransformerManager().transform_cell
"""IPython's own cell transformation (what ``shell.transform_cell`` does by default)."""


def test_a_name_read_before_it_is_assigned_is_an_input():
    assert analyse("y = x + 1").reads == ("x",)


def test_a_name_assigned_before_it_is_read_is_not_an_input():
    assert analyse("x = 1\ny = x + 1").reads == ()


def test_augmented_assignment_reads_the_name_first():
    a = analyse("total += 1")
    assert a.reads == ("total",) and a.writes == ("total",)


def test_free_names_of_lambdas_comprehensions_and_functions_are_reads():
    a = analyse("f = lambda q: q + w\nys = [i * k for i in range(n)]\n"
                "def g(a, b=d):\n    return a + e + g(a)\n")
    assert set(a.reads) == {"w", "k", "range", "n", "d", "e"}


def test_a_method_reading_a_name_its_class_body_assigns_still_reads_the_global():
    a = analyse("class A:\n    z = 1\n    def m(self):\n        return z\nr = A().m()")
    assert "z" in a.reads


def test_a_name_a_function_declares_global_is_a_read():
    a = analyse("def bump():\n    global counter\n    counter = counter + 1\nbump()")
    assert "counter" in a.reads


def test_calls_that_read_names_by_string_are_flagged_dynamic():
    assert analyse("y = eval('x + 1')").dynamic == ["eval"]
    assert analyse("y = x + 1").dynamic == []


def test_imports_definitions_and_classes_are_code_not_outputs():
    a = analyse("import numpy as np\nfrom os import path\nimport xml.dom\n"
                "def f(): pass\nclass C: pass\nz = 1")
    assert a.code_names == ("np", "path", "xml", "f", "C") and a.writes == ("z",)


def test_with_targets_and_exception_names_are_not_outputs():
    a = analyse("with open(p) as fh:\n    text = fh.read()\n"
                "try:\n    v = int(text)\nexcept ValueError as err:\n    v = 0\n")
    assert a.writes == ("text", "v")


def test_loop_and_walrus_targets_are_outputs():
    a = analyse("for i in range(3):\n    pass\nif (m := 2) > 1:\n    pass\n")
    assert a.writes == ("i", "m")


def test_a_deleted_name_is_not_an_output():
    assert analyse("tmp = 1\nkeep = tmp\ndel tmp").writes == ("keep",)


def test_formatting_and_comments_leave_the_digest_unchanged():
    assert analyse("x = 1  # one\n\n\ny=x+2").digest == analyse("x = 1\ny = x + 2").digest


def test_any_change_of_code_changes_the_digest():
    assert analyse("y = x + 1").digest != analyse("y = x + 2").digest


def test_ipython_syntax_is_analysed_as_the_python_ipython_makes_of_it():
    a = analyse("files = !ls {folder}\nn = len(files)\n", ipython)
    assert a.code == "files = get_ipython().getoutput('ls {folder}')\nn = len(files)\n"
    assert a.writes == ("files", "n")
    assert a.magics == (Magic("shell", "", "!ls {folder}"),)


def test_the_statement_under_percent_time_is_read_and_bound_as_part_of_the_cell():
    a = analyse("%time x = f(y)\nz = %time g(x)\n", ipython)
    assert a.reads == ("f", "y", "g")
    assert a.writes == ("x", "z") and a.magics == ()


def test_the_statement_under_percent_timeit_is_read_but_binds_nothing():
    a = analyse("%timeit -n 3 -r1 scratch = f(y)\n", ipython)
    assert a.reads == ("f", "y") and a.writes == () and a.magics == ()
    b = analyse("%%timeit setup = g()\nscratch = f(setup)\n", ipython)
    assert b.reads == ("g", "f") and b.writes == ()


def test_a_percent_percent_time_body_is_analysed_as_the_cell():
    a = analyse("%%time\nimport math\nx = math.sqrt(y)\n", ipython)
    assert a.reads == ("y",) and a.writes == ("x",) and a.code_names == ("math",)


def test_the_text_a_timing_magic_times_is_part_of_the_digest():
    assert analyse("%time x = f()", ipython).digest != analyse("%time x = g()", ipython).digest


def test_magics_other_than_timing_are_listed_as_the_cell_spells_them():
    a = analyse("%cd /tmp\nx = 1\n", ipython)
    assert a.magics == (Magic("line", "cd", "%cd /tmp"),)
    b = analyse("%%bash -e\necho hi\n", ipython)
    assert b.magics == (Magic("cell", "bash", "%%bash -e"),)
    assert analyse("ip = get_ipython()", ipython).magics == \
        (Magic("shell object", "get_ipython", "get_ipython()"),)


def test_timeit_saving_its_result_into_the_namespace_is_opaque():
    a = analyse("%timeit -v result f()\n", ipython)
    assert a.magics == (Magic("line", "timeit", "%timeit -v result f()"),)


def test_a_cell_function_runs_in_a_copy_of_the_namespace():
    ns = {"x": 1}
    run = CellFunction("c", "y = x + 1\nx = 99\n", ns, {"x": "x"}, {}, ("y",))
    assert run(x=5) == {"y": 6}
    assert ns == {"x": 1}


def test_a_cell_function_records_what_it_printed(capsys):
    run = CellFunction("c", "print('hi')\n", {}, {}, {}, ())
    assert run() is None
    assert run.shown == [{"stdout": "hi\n"}] and capsys.readouterr().out == "hi\n"


def test_an_output_left_unassigned_is_an_output_error_naming_it():
    run = CellFunction("c", "if False:\n    y = 1\n", {}, {}, {}, ("y",))
    with pytest.raises(OutputError, match="did not assign y"):
        run()


_names = st.sampled_from(["a", "b", "c", "x"])
_exprs = st.recursive(
    st.one_of(_names, st.integers(0, 99).map(str)),
    lambda inner: st.tuples(inner, st.sampled_from(["+", "*", "-"]), inner)
    .map(lambda t: f"({t[0]} {t[1]} {t[2]})"), max_leaves=6)
_programs = st.lists(st.tuples(_names, _exprs), min_size=1, max_size=6)


def _source(program: list[tuple[str, str]]) -> str:
    return "\n".join(f"{target} = {expr}" for target, expr in program)


@given(_programs)
def test_reformatting_a_cell_never_changes_its_digest(program):
    source = _source(program)
    noisy = "# a comment\n\n" + "\n\n".join(f"{line}   # note" for line in source.splitlines())
    canonical = ast.unparse(ast.parse(source))
    assert analyse(noisy).digest == analyse(source).digest == analyse(canonical).digest


@given(_programs)
def test_reads_are_the_names_loaded_before_the_cell_assigns_them(program):
    bound: set[str] = set()
    expected: list[str] = []
    for target, expr in program:
        expected += [n for n in re.findall(r"[a-z]+", expr) if n not in bound]
        bound.add(target)
    a = analyse(_source(program))
    assert a.reads == tuple(dict.fromkeys(expected))
    assert a.writes == tuple(dict.fromkeys(t for t, _ in program))
