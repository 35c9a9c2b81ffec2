"""Nodes and flows: definition, wiring by name, validation, and the plan."""

from __future__ import annotations

import functools

import pytest

import lazyflow as lf
import lazyflow.api
from lazyflow.model.graph import Node


def test_a_parameter_named_after_a_node_is_an_edge(flow):
    @flow.node
    def raw():
        return [1, 2]

    @flow.node
    def total(raw, scale: int = 1):
        return sum(raw) * scale

    assert flow.edges() == [("raw", "total")]
    plan = flow.plan("total", {})
    assert plan.order == ["raw", "total"]
    assert plan.upstream["total"] == {"raw": "raw"}
    assert plan.params["total"] == {"scale": 1}


def test_wiring_is_resolved_when_requested_not_when_defined(flow):
    @flow.node
    def total(raw):
        return sum(raw)

    assert flow.plan("total", {"raw": [1]}).params["total"] == {"raw": [1]}  # a flow input

    @flow.node
    def raw():
        return [1, 2, 3]

    assert flow.get("total") == 6  # now an edge


def test_explicit_inputs_wire_a_parameter_to_a_node_of_another_name(flow):
    @flow.node
    def clean():
        return [1, 2, 3]

    @flow.node(inputs={"data": "clean"})
    def stats(data):
        return len(data)

    assert flow.edges() == [("clean", "stats")]
    assert flow.get("stats") == 3


def test_explicit_inputs_to_a_missing_node_raise_unknown_node_error(flow):
    @flow.node(inputs={"data": "claen"})
    def stats(data):
        return data

    @flow.node
    def clean():
        return 1

    with pytest.raises(lf.UnknownNodeError, match="did you mean 'clean'"):
        flow.get("stats")


def test_defining_a_node_again_replaces_it(flow):
    @flow.node
    def value():
        return 1

    assert flow.get("value") == 1

    with pytest.warns(lf.DefinitionWarning):  # defined at another line: said, not refused
        @flow.node
        def value():  # noqa: F811 - an edited definition
            return 2

    assert flow.get("value") == 2
    assert len(flow) == 1


def test_a_redefinition_that_adds_an_edge_rewires_the_next_request(flow):
    @flow.node
    def a():
        return 1

    @flow.node
    def b():
        return 10

    assert flow.get("b") == 10

    with pytest.warns(lf.DefinitionWarning):
        @flow.node
        def b(a):  # noqa: F811
            return a + 10

    assert flow.get("b") == 11
    assert flow.last_run.nodes.keys() == {"a", "b"}


def test_removing_a_node_turns_its_edges_back_into_inputs(flow):
    @flow.node
    def raw():
        return 1

    @flow.node
    def total(raw):
        return raw

    assert flow.get("total") == 1
    flow.remove("raw")
    assert flow.get("total", raw=5) == 5
    with pytest.raises(lf.UnknownNodeError):
        flow.remove("raw")


def test_the_decorator_returns_the_function_itself(flow):
    def fit(x):
        return x + 1

    assert flow.node(fit) is fit
    assert flow.node(name="model", version="2", cache=False)(fit) is fit
    assert flow["model"].func is fit and flow["fit"].func is fit


def test_node_options_are_recorded(flow):
    @flow.node(name="model", version=2, cache=False)
    def fit(x):
        return x

    node = flow["model"]
    assert (node.name, node.version, node.cache, node.params) == ("model", "2", False, ("x",))


def test_lf_node_registers_on_the_default_flow_bare_and_with_options(monkeypatch):
    monkeypatch.setattr(lazyflow.api, "_DEFAULT_FLOW", None)

    @lf.node
    def bare():
        return 1

    @lf.node(name="named", version="3")
    def with_options(bare):
        return bare + 1

    flow = lf.default_flow()
    assert flow is lf.default_flow()
    assert set(flow) == {"bare", "named"}
    assert flow["named"].version == "3"


def test_a_node_is_immutable(flow):
    @flow.node
    def value():
        return 1

    with pytest.raises(AttributeError, match="immutable"):
        flow["value"].name = "other"


def test_parameters_defaults_and_keyword_only_parameters_are_read(flow):
    def f(a, b=2, /, c=3, *, d, e=5):
        return a

    node = Node(f)
    assert node.params == ("a", "b", "c", "d", "e")
    assert node.defaults == {"b": 2, "c": 3, "e": 5}


def test_positional_only_parameters_are_passed_by_position_and_the_rest_by_name(flow):
    def f(a, b=2, /, c=3):
        return (a, b, c)

    node = Node(f)
    assert node.func is f
    assert node.call(a=1, b=5, c=6) == (1, 5, 6)
    assert node.call(a=1, c=6) == (1, 2, 6)
    assert Node(functools.partial(f, c=0), name="p").call(a=1, b=5) == (1, 5, 0)


def test_a_function_without_positional_only_parameters_is_called_as_it_is(flow):
    def f(a, *, b):
        return a + b

    assert Node(f).call is f


def test_wrapped_functions_and_callable_objects_keep_their_real_signature(flow):
    def inner(raw, factor: int = 2):
        return raw * factor

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        return inner(*args, **kwargs)

    class Scale:
        def __call__(self, raw, k: int = 3):
            return raw * k

    assert Node(wrapper).params == ("raw", "factor")
    assert Node(functools.partial(inner, factor=4), name="p").defaults == {"factor": 4}
    assert Node(Scale(), name="scale").params == ("raw", "k")


def test_variadic_parameters_are_rejected_with_advice():
    def star(*rows):
        return rows

    def stars(**columns):
        return columns

    with pytest.raises(lf.DefinitionError, match=r"node 'star' takes \*rows: .* named parameter"):
        Node(star)
    with pytest.raises(lf.DefinitionError, match=r"takes \*\*columns"):
        Node(stars)


def test_definition_errors_say_what_is_wrong_and_what_to_do(flow):
    def f(x):
        return x

    with pytest.raises(lf.DefinitionError, match=r"'bad name' is not a valid identifier.*name="):
        Node(f, name="bad name")
    with pytest.raises(lf.DefinitionError, match=r"names parameter 'y'.*parameters are x"):
        Node(f, inputs={"y": "z"})
    with pytest.raises(lf.DefinitionError, match=r"inputs\['x'\] must be a node name"):
        Node(f, inputs={"x": 3})
    with pytest.raises(lf.DefinitionError, match=r"unknown option\(s\) colour; valid: name"):
        flow.node(colour="red")(f)
    with pytest.raises(lf.DefinitionError, match="needs a function"):
        Node(3)
    assert isinstance(lf.DefinitionError("x"), ValueError)


def test_an_unknown_target_suggests_close_matches_and_is_a_key_error(flow):
    @flow.node
    def total():
        return 1

    with pytest.raises(KeyError, match="did you mean 'total'"):
        flow.plan("totl", {})
    with pytest.raises(lf.UnknownNodeError, match="define it with @flow.node"):
        flow["zzz"]


def test_a_missing_input_names_the_node_and_the_parameter(flow):
    @flow.node
    def load(path):
        return path

    with pytest.raises(lf.MissingInputError, match=r"node 'load' needs input 'path'.*path=\.\.\."):
        flow.plan("load", {})
    assert flow.plan("load", {"path": "a"}).params["load"] == {"path": "a"}


def test_a_cycle_names_its_path(flow):
    @flow.node
    def a(c):
        return c

    @flow.node
    def b(a):
        return a

    @flow.node
    def c(b):
        return b

    with pytest.raises(lf.CycleError) as info:
        flow.plan("a", {})
    assert " -> ".join(info.value.path) in ("a -> c -> b -> a", "c -> b -> a -> c",
                                            "b -> a -> c -> b")
    assert info.value.path[0] == info.value.path[-1]


def test_a_plan_holds_only_the_targets_ancestors_in_dependency_order(flow):
    for name, params in [("a", ""), ("b", "a"), ("c", "a"), ("d", "b, c"), ("e", "")]:
        namespace: dict = {}
        exec(f"def {name}({params}):\n    return 1\n", namespace)
        flow.node(namespace[name])
    plan = flow.plan(["d"], {})
    assert set(plan.order) == {"a", "b", "c", "d"}
    assert plan.order.index("a") < plan.order.index("b") < plan.order.index("d")
    assert plan.order.index("c") < plan.order.index("d")
    assert sorted(plan.downstream["a"]) == ["b", "c"]


def test_a_ten_thousand_node_chain_plans_and_runs_without_recursion_error(flow):
    namespace: dict = {}
    source = "def n0(x):\n    return x\n" + "".join(
        f"def n{i}(n{i - 1}):\n    return n{i - 1} + 1\n" for i in range(1, 10_000))
    exec(source, namespace)
    for i in range(10_000):
        flow.node(namespace[f"n{i}"])
    plan = flow.plan("n9999", {"x": 0})
    assert len(plan.order) == 10_000 and plan.order[0] == "n0"
    assert flow.get("n9999", x=0) == 9999
    assert flow.get("n9999", x=0) == 9999
    assert list(flow.last_run.nodes) == ["n9999"]  # warm: the target alone


def test_requests_for_the_same_targets_share_the_plan_structure(flow):
    @flow.node
    def raw(n: int):
        return n

    first, second = flow.plan("raw", {"n": 1}), flow.plan("raw", {"n": 2})
    assert first.order is second.order
    assert (first.params["raw"], second.params["raw"]) == ({"n": 1}, {"n": 2})
