"""Nodes and graphs: definition, wiring by parameter name, validation, the plan.

Design note
-----------
A :class:`Node` is a small immutable object built once per definition: the
function, its parameters (read by ``signature.py``) and its options. Wiring
is *resolved at request time*, not at definition time, because in a notebook
nodes are defined in any order and redefined all the time: a parameter is an
edge when ``inputs=`` says so or when a node of that name exists when the
request is made; otherwise it is a flow input.

A request becomes a :class:`Plan`: plain data (topological order, upstream
and downstream maps, resolved flow inputs) computed by an *iterative* walk
backwards from the targets, linear in the size of the subgraph (Hamilton and
pipefunc recurse and hit the recursion limit at 1,000 nodes; pipefunc and
dask.delayed build quadratically). The engine runs plans; this module never
touches a cache: :class:`Graph` is a flow's definition and planning, and
``api.py`` builds :class:`~lazyflow.Flow` on top of it with a cache, events
and the requests the engine answers (so this module imports no engine).

The request-independent part of a plan (order, wiring, which parameters are
flow inputs) is memoised per target tuple and cleared whenever a node is
added or removed, so a repeated request only fills in the flow-input values.
Plans built from one memo share that structure and a ``memo`` dict where the
engine keeps per-node facts between requests; both are read-only to
everyone else. (Rebuilding per request was the rejected alternative: it cost
~3 µs per node on every warm request of a 10,000-node chain.)

Requests are checked when planned, before anything runs: unknown keywords,
keywords naming nodes and parameters one edit from a node's name are
``requests.py``'s job (:class:`~lazyflow.model.requests.RequestChecks`,
which keeps what it derives from the definition until it changes).
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from lazyflow.errors import (
    CacheWarning,
    CycleError,
    DefinitionError,
    MissingInputError,
    UnknownNodeError,
    warn,
)
from lazyflow.keys.fingerprint import Fingerprint, refresh
from lazyflow.keys.hashing import register_hasher
from lazyflow.model.failed import validate_catch
from lazyflow.model.lazy import annotated_lazy, lazy_params, validate_lazy
from lazyflow.model.mapping import validate_map
from lazyflow.model.options import DEFAULT, NodeOptions
from lazyflow.model.outputs import selector, validate_fallback, validate_outputs
from lazyflow.model.requests import RequestChecks
from lazyflow.model.signature import EMPTY, PositionalCall, read_signature

__all__ = ["EMPTY", "Graph", "Node", "Plan", "PositionalCall"]

F = TypeVar("F", bound=Callable[..., Any])

_NO_PARAMS: Mapping[str, Any] = types.MappingProxyType({})
_PLAN_MEMO_SIZE = 64


class Node:
    """One function of a flow: name, parameters, wiring and options.

    Built by ``@flow.node``; reach it as ``flow["name"]``. Immutable once built
    (re-decorating replaces the whole node).
    """

    # __weakref__: per-definition facts kept elsewhere die with the node (files.py)
    __slots__ = ("__weakref__", "_extra", "_fingerprint", "cache", "call", "defaults", "func",
                 "name", "options", "params", "version", "wiring")
    func: Callable[..., Any]
    call: Callable[..., Any]
    """The function as lazyflow calls it, with keyword arguments only: ``func`` itself, or a
    :class:`PositionalCall` when ``func`` has positional-only parameters."""
    name: str
    params: tuple[str, ...]
    defaults: dict[str, Any]
    wiring: dict[str, str]
    version: str
    cache: bool
    options: NodeOptions
    _extra: str | None
    """What the fingerprint mixes in besides the code: ``version=``, and for a node whose
    function is called otherwise than with its inputs whole (``map=``, lazy inputs), how;
    ``None`` until the first request works it out."""
    _fingerprint: Fingerprint | None

    def __init__(self, func: Callable[..., Any], *, name: str | None = None,
                 version: str | None = None, cache: bool = True,
                 inputs: Mapping[str, str] | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        if not callable(func):
            raise DefinitionError(f"@node needs a function, got {func!r}")
        node_name = name if name is not None else getattr(func, "__name__", None)
        if not isinstance(node_name, str) \
                or not all(part.isidentifier() for part in node_name.split(".")):
            raise DefinitionError(f"node name {node_name!r} is not a valid identifier (dotted "
                                  "names like 'prep.clean' name included nodes); "
                                  "pass name='...' to @flow.node")
        signature, star, positional_only = read_signature(func)
        if star is not None:
            raise DefinitionError(
                f"node {node_name!r} takes {star}: lazyflow wires parameters by name, "
                "so list each input as a named parameter")
        params = [p for p, _ in signature]
        defaults = {p: d for p, d in signature if d is not EMPTY}
        wiring = dict(inputs) if inputs else {}
        for param, upstream in wiring.items():
            if param not in params:
                raise DefinitionError(
                    f"node {node_name!r}: inputs= names parameter {param!r}, which the function "
                    f"does not take; its parameters are {', '.join(params) or 'none'}")
            if not isinstance(upstream, str):
                raise DefinitionError(f"node {node_name!r}: inputs[{param!r}] must be a node "
                                      f"name, got {upstream!r}")
        declared = NodeOptions.of(node_name, options or {})
        if declared is not DEFAULT:  # the defaults are valid: skip checking them (~3 µs)
            validate_lazy(node_name, params, declared.lazy)
            if declared.map is not None:
                validate_map(node_name, params, declared.map,
                             declared.lazy or annotated_lazy(func))
            if declared.outputs is not None and declared.on_error == "fallback":
                validate_fallback(node_name, validate_outputs(node_name, declared.outputs),
                                  declared.fallback)
        call = PositionalCall(func, tuple(params[:positional_only])) if positional_only else func
        fields = {"func": func, "call": call, "name": node_name, "params": tuple(params),
                  "defaults": defaults, "wiring": wiring,
                  "version": "" if version is None else str(version), "cache": bool(cache),
                  "options": declared,
                  "_fingerprint": None, "_extra": None}
        for attr, value in fields.items():
            object.__setattr__(self, attr, value)

    def fingerprint(self) -> Fingerprint:
        """The code fingerprint of the node's function (with its ``version=``).

        Kept on the node and re-validated on each call (globals, closures and
        defaults it read still the same), as :func:`lazyflow.keys.fingerprint`
        does for any function; a cache, not state: the node stays what it was.
        """
        extra = self._extra
        if extra is None:  # worked out at the first request, not at definition (~1.3 µs)
            extra = _extra(self)
            object.__setattr__(self, "_extra", extra)
        fp = refresh(self._fingerprint, self.func, extra=extra)
        if fp is not self._fingerprint:
            if fp.notes and (self._fingerprint is None or fp.notes != self._fingerprint.notes):
                _warn_notes(self.name, fp)
            object.__setattr__(self, "_fingerprint", fp)
        return fp

    def __setattr__(self, attr: str, value: Any) -> None:
        raise AttributeError(f"node {self.name!r} is immutable; redefine it with @flow.node")

    def __repr__(self) -> str:
        return f"<Node {self.name}({', '.join(self.params)})>"


def _extra(node: Node) -> str:
    """``node``'s ``version=``, plus how its function is called when that is not with each
    input whole: the same code mapped over a parameter, or given thunks, computes another
    value, so it must not share a key with the plain call (a stale hit when ``map=`` is
    added). A plain node's stays its version alone: its keys are as they were."""
    lazy = lazy_params(node)
    mapped = node.options.map
    if mapped is None and not lazy:
        return node.version
    return f"{node.version}\0map={mapped or ''}\0lazy={','.join(sorted(lazy))}"


def _warn_notes(node: str, fp: Fingerprint) -> None:
    """Say once per change what the node's key cannot see (and whether it is cached)."""
    outcome = "it is not cached" if fp.volatile else "the key does not cover it"
    for note in fp.notes:
        if note in fp._quiet:  # why it is not cached, where nothing is wrong (explain says)
            continue
        warn(f"node {node!r}: {note}; {outcome}. Pass what varies as an input, or declare "
             "the node with cache=False or version=", CacheWarning)


@dataclass
class Plan:
    """What a request needs, as plain data: the subgraph of the targets' ancestors.

    ``order`` is topological (ancestors first). ``upstream[n]`` maps each edge
    parameter of ``n`` to the node feeding it; ``params[n]`` maps each flow-input
    parameter to its value for this request. Everything but ``params`` is
    shared with other requests for the same targets: read-only. ``memo`` is
    where the engine keeps per-node facts from one request to the next; it
    lives exactly as long as the flow's definition does not change.
    """

    targets: tuple[str, ...]
    order: list[str]
    nodes: dict[str, Node]
    upstream: dict[str, dict[str, str]]
    downstream: dict[str, tuple[str, ...]]
    params: dict[str, Mapping[str, Any]]
    memo: dict[str, Any] = field(default_factory=dict)

    def path_to_target(self, name: str) -> list[str]:
        """A shortest chain from a target down to ``name``: ``['model', 'clean', 'raw']``."""
        parents: dict[str, str | None] = {name: None}
        frontier = [name]
        while frontier:
            nxt: list[str] = []
            for n in frontier:
                if n in self.targets:
                    chain = [n]
                    while parents[chain[-1]] is not None:
                        chain.append(parents[chain[-1]])  # type: ignore[arg-type]
                    return chain
                for d in self.downstream.get(n, ()):
                    if d not in parents:
                        parents[d] = n
                        nxt.append(d)
            frontier = nxt
        return [name]


class Graph:
    """A named set of nodes, wired by parameter name: definition and planning.

    What a :class:`~lazyflow.Flow` is without its cache and its requests (those
    live in ``api.py``, on top of the engine): ``node``/``add``/``remove`` define,
    ``plan`` resolves a request's subgraph. Plain enough to plan without a cache.

    >>> g = Graph("demo")
    >>> @g.node
    ... def raw(n: int): return list(range(n))
    >>> @g.node
    ... def total(raw): return sum(raw)
    >>> g.plan("total", {"n": 3}).order
    ['raw', 'total']
    """

    request_options: tuple[str, ...] = ()
    """Keywords a request takes besides flow inputs (the ``Flow`` façade's run options);
    suggested when a keyword is misspelt."""

    def __init__(self, name: str = "flow") -> None:
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._derived: dict[str, tuple[str, ...]] = {}  # node -> its output selector nodes
        self._shapes: dict[tuple[str, ...], _Shape] = {}
        self._definitions = 0  # definitions so far: a shape walked across one is not kept
        self._checks = RequestChecks(self)  # cleared with the plan memo

    # ----------------------------------------------------------------- definition

    @overload
    def node(self, func: F, /) -> F: ...

    @overload
    def node(self, func: None = None, /, *, name: str | None = None, version: str | None = None,
             cache: bool = True, inputs: Mapping[str, str] | None = None,
             **options: Any) -> Callable[[F], F]: ...

    def node(self, func: F | None = None, /, *, name: str | None = None,
             version: str | None = None, cache: bool = True,
             inputs: Mapping[str, str] | None = None, **options: Any) -> Any:
        """Register a function as a node; works bare (``@flow.node``) or with options.

        Returns the function unchanged, so it stays plain and testable. A node
        defined again under the same name replaces the old one.

        ``outputs=("train", "test")`` makes each element of the returned tuple
        (or dict) a node of its own, cached separately.
        """

        def register(f: F) -> F:
            self.add(Node(f, name=name, version=version, cache=cache, inputs=inputs,
                          options=options))
            return f

        return register(func) if func is not None else register

    def add(self, node: Node) -> Node:
        """Add (or replace) a built :class:`Node`, with the selector nodes of its outputs."""
        for stale in self._derived.pop(node.name, ()):
            self._nodes.pop(stale, None)
        self._nodes[node.name] = node
        if node.options.outputs is not None:
            names = validate_outputs(node.name, node.options.outputs)
            for index, output in enumerate(names):
                self._nodes[output] = Node(selector(node.name, names, index), name=output,
                                           inputs={"value": node.name})
            self._derived[node.name] = names
        self._changed()
        return node

    def remove(self, name: str) -> None:
        """Remove a node (and the selector nodes of its outputs) by name."""
        self[name]
        del self._nodes[name]
        for derived in self._derived.pop(name, ()):
            self._nodes.pop(derived, None)
        self._changed()

    def _changed(self) -> None:
        """Forget what was derived from the definition: wiring is by name, so any
        definition may rewire any plan."""
        self._definitions += 1  # before clearing: ``_shape_of`` relies on this order
        self._shapes.clear()
        self._checks.clear()

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNodeError(name, self.name, self._close_matches(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def nodes(self) -> Mapping[str, Node]:
        """The nodes by name (read-only view)."""
        return types.MappingProxyType(self._nodes)

    def edges(self) -> list[tuple[str, str]]:
        """Every (upstream, downstream) pair as wired right now."""
        return [(up, n.name) for n in self._nodes.values()
                for up in self._wiring(n).values()]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self._nodes)} nodes>"

    # ----------------------------------------------------------------- planning

    def plan(self, targets: str | Iterable[str], inputs: Mapping[str, Any]) -> Plan:
        """Resolve the subgraph a request needs; raises on unknown nodes, cycles, unknown
        keywords (:class:`~lazyflow.UnknownInputError`) and, after those, missing inputs."""
        wanted = (targets,) if isinstance(targets, str) else tuple(dict.fromkeys(targets))
        shape = self._shape_of(wanted)
        if inputs:
            self._checks.check_keywords(shape, inputs)
        params = dict.fromkeys(shape.order, _NO_PARAMS)
        for name, names in shape.inputs:
            values: dict[str, Any] = {}
            defaults = shape.nodes[name].defaults
            for p in names:
                if p in inputs:
                    values[p] = inputs[p]
                elif p in defaults:
                    values[p] = defaults[p]
                else:
                    raise MissingInputError(name, p)
            params[name] = values
        return Plan(wanted, shape.order, shape.nodes, shape.upstream, shape.downstream, params,
                    shape.memo)

    def check_inputs(self, targets: str | Iterable[str], names: Iterable[str]) -> None:
        """Raise :class:`~lazyflow.UnknownInputError` for the first of ``names`` that is no
        flow input of any node of the flow; check nothing else (``plan`` does the rest).

        >>> g = Graph("demo")
        >>> @g.node
        ... def raw(n: int): return list(range(n))
        >>> g.check_inputs("raw", ["nn"])
        Traceback (most recent call last):
        lazyflow.errors.UnknownInputError: 'nn' is not an input of flow 'demo': no node takes \
a parameter 'nn'; did you mean 'n'?
        """
        wanted = (targets,) if isinstance(targets, str) else tuple(dict.fromkeys(targets))
        self._checks.check_keywords(self._shape_of(wanted), names)

    def flow_inputs(self, targets: str | Iterable[str] | None = None) -> dict[str, tuple[str, ...]]:
        """The flow inputs of a request (of the whole flow without ``targets``), each with the
        nodes that take it, in plan order: parameters wired to no node.

        >>> g = Graph("demo")
        >>> @g.node
        ... def raw(n: int): return list(range(n))
        >>> @g.node
        ... def total(raw, scale=1): return scale * sum(raw)
        >>> g.flow_inputs("total")
        {'n': ('raw',), 'scale': ('total',)}
        """
        if targets is None:
            return dict(self._checks.all_inputs())
        wanted = (targets,) if isinstance(targets, str) else tuple(dict.fromkeys(targets))
        found: dict[str, tuple[str, ...]] = {}
        for name, names in self._shape_of(wanted).inputs:
            for param in names:
                found[param] = (*found.get(param, ()), name)
        return found

    def _shape_of(self, wanted: tuple[str, ...]) -> _Shape:
        shape = self._shapes.get(wanted)
        if shape is None:
            definitions = self._definitions
            shape = self._shape(wanted)
            if len(self._shapes) >= _PLAN_MEMO_SIZE:
                self._shapes.pop(next(iter(self._shapes), wanted), None)
            self._shapes[wanted] = shape
            if definitions != self._definitions:
                # a node was (re)defined from another thread while this shape was walked: it
                # may hold the replaced node, and is good for this request only (remembered,
                # every later request would run the old code). Dropped after storing, as
                # ``_changed`` counts before it clears: no order of the two keeps it.
                self._shapes.pop(wanted, None)
        return shape

    def _shape(self, wanted: tuple[str, ...]) -> _Shape:
        """The request-independent part of a plan: walk back from ``wanted`` iteratively."""
        if not wanted:
            raise ValueError("name at least one target node")
        for t in wanted:
            self[t]
        order: list[str] = []
        upstream: dict[str, dict[str, str]] = {}
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        # the depth-first path as two flat lists (names, next child's index): no iterator
        # and tuple per node for the cyclic GC to walk while a deep chain is on the path
        path: list[str] = []
        at: list[int] = []
        kids: dict[str, tuple[str, ...]] = {}
        for target in wanted:
            if state.get(target) == 2:
                continue
            self._enter(target, path, at, kids, state, upstream)
            while path:
                name = path[-1]
                children, index = kids[name], at[-1]
                if index == len(children):
                    path.pop()
                    at.pop()
                    state[name] = 2
                    order.append(name)
                    continue
                at[-1] = index + 1
                child = children[index]  # a repeated child is done by its second turn
                seen = state.get(child)
                if seen == 1:
                    raise CycleError([*path[path.index(child):], child])
                if seen is None:
                    self._enter(child, path, at, kids, state, upstream)
        nodes = {n: self._nodes[n] for n in order}
        inputs = _flow_inputs(order, nodes, upstream)
        self._checks.warn_near_misses(nodes, inputs)
        return _Shape(order, nodes, upstream, _downstream(order, upstream), tuple(inputs),
                      frozenset(p for _, names in inputs for p in names))

    def _enter(self, name: str, path: list[str], at: list[int],
               kids: dict[str, tuple[str, ...]], state: dict[str, int],
               upstream: dict[str, dict[str, str]]) -> None:
        node = self._nodes[name]
        edges = self._wiring(node)
        for param, up in edges.items():
            if up not in self._nodes:
                raise UnknownNodeError(up, self.name, self._close_matches(up)) from DefinitionError(
                    f"node {name!r} wires parameter {param!r} to {up!r} with inputs=")
        if node.options.catch:
            validate_catch(name, node.options.catch, list(edges.values()), _uncatchable(node, edges))
        upstream[name] = edges
        state[name] = 1
        kids[name] = tuple(edges.values())
        path.append(name)
        at.append(0)

    def _wiring(self, node: Node) -> dict[str, str]:
        return {p: node.wiring.get(p, p) for p in node.params
                if p in node.wiring or p in self._nodes}

    def _close_matches(self, name: str) -> list[str]:
        return difflib.get_close_matches(name, list(self._nodes), n=3, cutoff=0.6)


def _uncatchable(node: Node, edges: Mapping[str, str]) -> dict[str, str]:
    """The input nodes of ``node`` whose failure it cannot receive as an ``lf.Failed``, and
    why: the one it maps over (a failure has no elements) and its lazy ones."""
    found = {edges[p]: f"the input its lazy parameter {p!r} calls, which a catch cannot "
                       "hand an lf.Failed" for p in lazy_params(node) if p in edges}
    mapped = node.options.map
    if mapped is not None and mapped in edges:
        found[edges[mapped]] = f"the input it maps over ({mapped!r}), and a failure has no " \
                               "elements to map"
    return found


def _downstream(order: list[str],
                upstream: dict[str, dict[str, str]]) -> dict[str, tuple[str, ...]]:
    """Each planned node's consumers, in edge order with repeats kept."""
    # a list only for a node read more than once
    consumers: dict[str, Any] = {}
    for name in order:
        for up in upstream[name].values():
            have = consumers.get(up)
            if have is None:
                consumers[up] = (name,)
            elif type(have) is tuple:
                consumers[up] = [*have, name]
            else:
                have.append(name)
    # tuples of strings: the cyclic GC stops tracking them, lists it walks forever
    return {n: _as_tuple(consumers.get(n, ())) for n in order}


def _as_tuple(consumers: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return consumers if type(consumers) is tuple else tuple(consumers)


def _flow_inputs(order: list[str], nodes: dict[str, Node],
                 upstream: dict[str, dict[str, str]]) -> list[tuple[str, tuple[str, ...]]]:
    """``(node, its flow-input parameters)`` for each planned node that has any, in order."""
    inputs = []
    for name in order:
        edges = upstream[name]
        # names only (defaults are read off the node): a tuple of strings, untracked by
        # the cyclic GC, where a pair holding a default (a class, say) stays tracked
        names = tuple(p for p in nodes[name].params if p not in edges)
        if names:
            inputs.append((name, names))
    return inputs


@dataclass(slots=True)
class _Shape:
    """A memoised plan minus the flow-input values (see ``Flow.plan``)."""

    order: list[str]
    nodes: dict[str, Node]
    upstream: dict[str, dict[str, str]]
    downstream: dict[str, tuple[str, ...]]
    inputs: tuple[tuple[str, tuple[str, ...]], ...]  # (node, its flow-input parameters)
    input_names: frozenset[str]  # every flow-input parameter of the plan
    memo: dict[str, Any] = field(default_factory=dict)


def _flow_identity(flow: Graph) -> tuple[Any, ...]:
    """What a node that reads a flow (to call ``flow.get`` inside) is keyed by: the flow's
    name and every node's code, version and wiring; never its cache or its listeners."""
    return (flow.name, [(name, node.func, node.version, sorted(node.wiring.items()))
                        for name, node in sorted(flow._nodes.items())])


register_hasher(Graph, _flow_identity)
