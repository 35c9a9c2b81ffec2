"""Checking a request's keywords against its plan: unknown inputs, keywords naming nodes,
near-miss parameter names.

Design note
-----------
Requests are checked when planned (``graph.py`` calls in here), before
anything runs and before a missing input is reported: a keyword that is no
flow input of any node of the flow raises
:class:`~lazyflow.UnknownInputError` (a keyword naming a node says so). An
input of a node this request does not need is accepted silently, so one
dict of inputs serves every request of a notebook (rejected: pipefunc's rule,
refusing every keyword the planned nodes do not take; it makes that dict
fail on every request but the widest). The check costs a set lookup per
keyword against the plan's inputs; the flow-wide set is built only for a
keyword outside them, and kept until the definition changes.

Wiring by name has one silent failure: a misspelt parameter (``raww`` for the
node ``raw``) becomes a flow input. When a plan is first built, a flow-input
parameter of four or more characters one edit away from a node's name gets a
:class:`~lazyflow.WiringWarning` pointing at the function's definition, once
per node definition (shorter names are too often one edit from each other).

State: :class:`RequestChecks` keeps what these checks derive from the whole
definition (the flow-wide inputs, each parameter's near node); its graph
clears it whenever a node is added or removed, with its plan memo.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from lazyflow.errors import LazyflowError, UnknownInputError, WiringWarning

if TYPE_CHECKING:
    from lazyflow.model.graph import Graph, Node, _Shape

__all__ = ["RequestChecks"]

_NEAR_MISS_LENGTH = 4  # shorter parameters (x, n, df, key) are one edit from too much
_WARNED: weakref.WeakKeyDictionary[Node, set[str]] = weakref.WeakKeyDictionary()
"""Per node definition, the parameters already warned about as near misses of a node name."""


class RequestChecks:
    """The checks of one graph's requests, with what they derive from its whole definition.

    Owned by a :class:`~lazyflow.model.graph.Graph`, which calls :meth:`clear`
    whenever its definition changes (wiring is by name: any definition may
    change what a keyword or a parameter means).
    """

    def __init__(self, graph: Graph) -> None:
        self._graph = graph
        self._inputs: dict[str, tuple[str, ...]] | None = None  # every flow input -> its nodes
        self._near: dict[str, str | None] = {}  # parameter -> a node one edit away, or None
        self._letters: str | None = None  # the characters of the node names

    def clear(self) -> None:
        """Forget what was derived from the definition."""
        self._inputs = None
        self._near.clear()
        self._letters = None

    # ----------------------------------------------------------------- keywords

    def check_keywords(self, shape: _Shape, names: Iterable[str]) -> None:
        """Raise :class:`~lazyflow.UnknownInputError` for the first of ``names`` that no node
        of the flow takes as a flow input."""
        known = shape.input_names  # the planned nodes' inputs (shared/API.md)
        for name in names:
            if name not in known:
                raise self._unknown_input(name, shape)

    def all_inputs(self) -> dict[str, tuple[str, ...]]:
        """Every flow input of any node of the flow, with the nodes taking it."""
        if self._inputs is None:
            graph = self._graph
            found: dict[str, tuple[str, ...]] = {}
            for node in graph._nodes.values():
                edges = graph._wiring(node)
                for param in node.params:
                    if param not in edges:
                        found[param] = (*found.get(param, ()), node.name)
            self._inputs = found
        return self._inputs

    def _unknown_input(self, name: str, shape: _Shape) -> UnknownInputError:
        """The error for a keyword that no node takes as a flow input, with what it may be."""
        graph = self._graph
        node, wired_in = (name, None) if name in graph._nodes else self._wired(name, shape)
        if node is not None:
            return UnknownInputError(name, graph.name, node=node, wired_in=wired_in,
                                     sources=self._sources(node))
        options = [o for o in difflib.get_close_matches(name, graph.request_options, n=1)
                   if o != name]
        return UnknownInputError(
            name, graph.name, options=options, inputs=sorted(shape.input_names),
            unplanned=self.all_inputs().get(name, ()),
            suggestions=difflib.get_close_matches(name, sorted(shape.input_names), n=3))

    def _wired(self, param: str, shape: _Shape) -> tuple[str | None, str | None]:
        """``(upstream node, node)`` for a parameter some node wires to a node with
        ``inputs=``, the planned nodes first; ``(None, None)`` when none does."""
        nodes = self._graph._nodes
        for node in (*shape.nodes.values(), *nodes.values()):
            if param in node.wiring and node.wiring[param] in nodes:
                return node.wiring[param], node.name
        return None, None

    def _sources(self, node: str) -> list[str]:
        """The flow inputs ``node`` is computed from (none if it cannot be planned)."""
        try:
            return sorted(self._graph._shape_of((node,)).input_names)
        except LazyflowError:  # a cycle or a missing node: the request itself will say so
            return []

    # ----------------------------------------------------------------- near misses

    def warn_near_misses(self, nodes: dict[str, Node],
                         inputs: list[tuple[str, tuple[str, ...]]]) -> None:
        """Warn about flow-input parameters one edit away from a node's name (probably typos)."""
        for name, params in inputs:
            for param in params:
                if len(param) >= _NEAR_MISS_LENGTH:
                    near = self._near_node(param)
                    if near is not None:
                        _warn_near_miss(nodes[name], param, near)

    def _near_node(self, param: str) -> str | None:
        """The first node (by name) one edit away from ``param``, else None; memoised.

        Generates ``param``'s one-edit variants over the letters of the node names and
        looks each up: linear in the parameter's length, not in the number of nodes.
        """
        if param not in self._near:
            nodes = self._graph._nodes
            if self._letters is None:
                self._letters = "".join(sorted(set("".join(nodes))))
            self._near[param] = min((v for v in _one_edit(param, self._letters)
                                     if v in nodes), default=None)
        return self._near[param]


def _one_edit(word: str, letters: str) -> Iterator[str]:
    """Every string one deletion, adjacent transposition, substitution or insertion away."""
    for i in range(len(word) + 1):
        head, tail = word[:i], word[i:]
        if tail:
            yield head + tail[1:]
            if len(tail) > 1:
                yield head + tail[1] + tail[0] + tail[2:]
            for c in letters:
                if c != tail[0]:
                    yield head + c + tail[1:]
        for c in letters:
            yield head + c + tail


def _warn_near_miss(node: Node, param: str, near: str) -> None:
    """Warn once per node definition, at the line defining the node's function."""
    warned = _WARNED.setdefault(node, set())
    if param in warned:
        return
    warned.add(param)
    message = (f"parameter {param!r} of node {node.name!r} matches no node; did you mean node "
               f"{near!r}? As written it is a flow input: rename the parameter to {near!r} to "
               "read that node's value")
    try:
        code = inspect.unwrap(node.func).__code__
    except (AttributeError, ValueError):  # a callable object, a partial: no line to point at
        warnings.warn(message, WiringWarning, stacklevel=2)
        return
    warnings.warn_explicit(message, WiringWarning, code.co_filename, code.co_firstlineno,
                           module=getattr(node.func, "__module__", None),
                           module_globals=getattr(node.func, "__globals__", None))
