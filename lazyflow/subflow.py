"""Sub-flows: one flow used inside another, by inclusion or as a single node.

Design note
-----------
Two ways, for two needs:

* ``outer.include(inner, prefix="prep")`` copies inner's nodes into outer
  under dotted names (``prep.clean``), with inner's edges rewired to the
  copies. They are ordinary nodes of outer: they run, cache and show up
  one by one, and a widget can nest them by their prefix (:func:`groups`).
  Content and trace keys do not contain node names, so an included node has
  the same keys as in inner: with a shared cache, what inner computed is a hit
  in outer. Inner's flow inputs stay flow inputs (``inputs=`` wires them to
  outer nodes instead). The copy is a snapshot: including again under the
  same prefix replaces every node of that prefix.
* ``inner.as_node("report", name="prep")`` makes *one* node whose value is
  inner's target, computed by inner with inner's own cache. Its parameters are
  inner's flow inputs for that target. Its key covers a structural digest of
  the target's subgraph in inner (every node's name, code fingerprint,
  version and wiring), so editing any function upstream of the target in
  inner invalidates it; a node's ``check=`` counts too (a changed check must
  judge the value again), and so do the defaults of a node whose function's
  fingerprint does not cover them (a ``%%flow`` cell's captured values). When
  a node it needs may not be served from a cache (``deterministic=False``,
  ``cache=False``, code lazyflow cannot see into), expires (``max_age=``), or
  may hand a stand-in for a failure to its dependents (``catch=``,
  ``on_error="fallback"``: the inner flow stores nothing computed from one),
  the outer node is not cached (its structure is :class:`NotServable`, without
  a warning; ``explain`` says why) and the inner flow, asked each time, decides:
  a stored outer result would outlive the inner expiry, or keep a fallback
  after the failure went away.

Rejected alternative: a live link that re-reads inner on every request from
outer. It makes outer's graph change when another object is edited, which a
plan (plain data, built once per request) cannot show or explain.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lazyflow.errors import DefinitionError, NotServable
from lazyflow.keys.hashing import hash_value, register_hasher
from lazyflow.model.graph import Node

if TYPE_CHECKING:
    from lazyflow.api import Flow

__all__ = ["INNER_DEFAULT", "SubflowTarget", "as_node", "groups", "include"]


def include(outer: Flow, inner: Flow, prefix: str,
            inputs: Mapping[str, str] | None = None) -> list[str]:
    """Copy ``inner``'s nodes into ``outer`` as ``prefix.name``; return the new names."""
    if not isinstance(prefix, str) or not all(p.isidentifier() for p in prefix.split(".")):
        raise DefinitionError(f"include prefix {prefix!r} must be an identifier (or dotted "
                              "identifiers), like prefix='prep'")
    if inner is outer:
        raise DefinitionError(f"flow {outer.name!r} cannot include itself")
    inputs = dict(inputs or {})
    for stale in [n for n in outer if n.startswith(prefix + ".")]:
        outer._nodes.pop(stale, None)
    added: list[str] = []
    for node in inner.nodes.values():
        wiring = {p: f"{prefix}.{up}" for p, up in inner._wiring(node).items()}
        wiring.update({p: up for p, up in inputs.items() if p in node.params and p not in wiring})
        options = {k: v for k, v in node.options.declared().items() if k != "outputs"}
        if "catch" in options:  # catch= names inner nodes: their copies, under the prefix
            options["catch"] = tuple(f"{prefix}.{c}" if c in inner.nodes else c
                                     for c in options["catch"])
        copy = Node(node.func, name=f"{prefix}.{node.name}", version=node.version or None,
                    cache=node.cache, inputs=wiring, options=options)
        outer._nodes[copy.name] = copy  # outputs' selector nodes are copied as nodes of their own
        added.append(copy.name)
    return added


def groups(flow: Iterable[str]) -> dict[str, list[str]]:
    """Node names by include prefix (``{"prep": ["prep.raw", "prep.clean"]}``), for nesting.

    ``flow`` is a flow or any names of nodes (a run's, say).
    """
    out: dict[str, list[str]] = {}
    for name in flow:
        prefix, dot, _ = name.rpartition(".")
        if dot:
            out.setdefault(prefix, []).append(name)
    return out


class SubflowTarget:
    """A target of another flow, as an as_node node's function reads it.

    Hashes to the structure of the target's subgraph, so a node reading it is
    invalidated when any function upstream of the target changes.
    """

    __slots__ = ("flow", "target")

    def __init__(self, flow: Flow, target: str) -> None:
        self.flow = flow
        self.target = target

    def structure(self) -> list[tuple[Any, ...]]:
        """(name, fingerprint, version, cache, wiring) of every node the target needs; the
        fingerprint is the node's own (its version, ``map=`` and lazy inputs in it). A node
        with ``check=`` adds its checks' digest; one whose function's fingerprint does not
        cover its defaults (a ``%%flow`` cell, a callable object) adds the digest of the
        defaults its flow inputs fall back to, which an outer request does not pass on.

        Raises :class:`NotServable` when a stored result of the target may not be served: a
        node it needs computes anew on every request (``deterministic=False``), expires
        (``max_age``), is not stored (``cache=False`` or code lazyflow cannot see into), or
        may hand a stand-in for a failure to its dependents (``catch=``,
        ``on_error="fallback"``), whose results the inner flow does not store. Only the
        inner flow, asked again, can honour any of these: the node running it is not
        cached (it was keyed by a digest never given twice, which stored a result no key
        would ever find again on every request)."""
        rows: list[tuple[Any, ...]] = []
        for name, node, wiring in self._needed():
            fingerprint = node.fingerprint()
            why = _unservable(node) or ("code lazyflow cannot see into"
                                        if fingerprint.volatile else None)
            if why is not None:
                raise NotServable("SubflowTarget", f"flow {self.flow.name!r} needs node "
                                  f"{name!r}, whose results it may not serve from a cache "
                                  f"({why}): that flow decides on each request")
            row: tuple[Any, ...] = (name, fingerprint.digest, node.version, node.cache, wiring)
            if node.options.check:  # checks are not in keys: a changed one must run again
                row += ("check", hash_value(node.options.check))
            defaults = _uncovered_defaults(node, wiring)
            if defaults:
                row += ("defaults", hash_value(defaults))
            rows.append(row)
        return sorted(rows, key=lambda row: row[0])

    def _needed(self) -> Iterator[tuple[str, Node, dict[str, str]]]:
        """Each node the target needs, once, with its wiring."""
        seen: set[str] = set()
        stack = [self.target]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self.flow[name]
            wiring = self.flow._wiring(node)
            yield name, node, wiring
            stack.extend(wiring.values())

    def __repr__(self) -> str:
        return f"<SubflowTarget {self.flow.name}:{self.target}>"


def _unservable(node: Node) -> str | None:
    """Why a stored result computed through ``node`` may not be served by a key alone, or
    ``None`` when it may."""
    options = node.options
    reasons = [("cache=False", not node.cache),
               ("deterministic=False", not options.deterministic),
               ("max_age=", options.max_age is not None),
               ("catch=", bool(options.catch)),
               ("on_error='fallback'", options.on_error == "fallback")]
    return next((reason for reason, holds in reasons if holds), None)


def _uncovered_defaults(node: Node, wiring: Mapping[str, str]) -> dict[str, Any]:
    """The defaults of ``node``'s flow inputs when its fingerprint does not cover them.

    A plain function's defaults are part of its code fingerprint; any other callable's
    (a ``%%flow`` cell keeps the values it read as defaults) are values its flow passes
    as inputs, and an outer request passes none of them (``INNER_DEFAULT``).
    """
    if isinstance(node.func, types.FunctionType):
        return {}
    return {p: d for p, d in node.defaults.items() if p not in wiring}


def _digest(ref: SubflowTarget) -> str:
    """The structure's digest (:class:`NotServable` when no stored result may be served)."""
    return hash_value(ref.structure())


register_hasher(SubflowTarget, _digest)


def as_node(inner: Flow, target: str, *, name: str | None = None) -> Node:
    """One node computing ``inner``'s ``target``; its parameters are inner's flow inputs."""
    inner[target]
    ref = SubflowTarget(inner, target)
    params = _flow_inputs(inner, target)

    def run_subflow(**kwargs: Any) -> Any:
        given = {k: v for k, v in kwargs.items() if v is not INNER_DEFAULT}
        return ref.flow.get(ref.target, inputs=given, strict=True)

    run_subflow.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run_subflow.__name__ = run_subflow.__qualname__ = name or target
    run_subflow.__lazyflow_subflow__ = ref  # type: ignore[attr-defined]  # for nested views
    return Node(run_subflow, name=name or target)


class _InnerDefault:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<inner default>"


INNER_DEFAULT: Any = _InnerDefault()
"""Default of an as_node parameter that every inner node using it defaults: not passed on,
so each inner node keeps its own default (inner defaults are part of inner fingerprints)."""
register_hasher(_InnerDefault, lambda _: "inner default")


def _flow_inputs(flow: Flow, target: str) -> list[inspect.Parameter]:
    """The flow inputs ``target`` needs in ``flow``; optional when every user defaults it."""
    required: dict[str, bool] = {}
    seen: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = flow[name]
        wiring = flow._wiring(node)
        stack.extend(wiring.values())
        for p in node.params:
            if p not in wiring:
                required[p] = required.get(p, False) or p not in node.defaults
    return [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY,
                              default=inspect.Parameter.empty if required[p] else INNER_DEFAULT)
            for p in sorted(required)]
