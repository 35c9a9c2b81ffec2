"""Node options: every ``@flow.node`` option, its default and its validation, in one place.

Design note
-----------
A node's options are a frozen, slotted record, :class:`NodeOptions`, built once
when the node is declared and read by attribute everywhere after
(``node.options.map``, ``node.options.deterministic``): no module reads an
option by a string key, and none registers options of its own at import time,
so the valid set never depends on import order. Options that need the
function's parameters to be checked (``lazy=``, ``map=``, ``outputs=``) are
checked by the graph when the node is built; the rest here. A node declared
without options shares :data:`DEFAULT`, which lets the engine skip work for
it by identity.

Rejected: a ``Mapping[str, Any]`` with defaults merged in (the valid set and
the defaults were written in four places, and one module added an option by
mutating the shared dict at import).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lazyflow.errors import DefinitionError
from lazyflow.model.durations import seconds
from lazyflow.model.failed import normalized_catch
from lazyflow.model.policies import validate_policy_options

__all__ = ["DEFAULT", "NAMES", "NodeOptions"]


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """The options of one node (besides ``name``, ``version``, ``cache`` and ``inputs``).

    >>> NodeOptions.of("fit", {"retries": 2}).retries
    2
    >>> NodeOptions.of("fit", {"retires": 2})
    Traceback (most recent call last):
    ...
    lazyflow.errors.DefinitionError: node 'fit': unknown option(s) retires; ...
    """

    outputs: Any = None
    """Names of the node's outputs (``outputs.py``), or ``None`` for one value."""
    retries: int = 0
    retry_delay: float = 0.1
    retry_on: Any = (Exception,)
    """An exception class or a tuple of them (``policies.py``)."""
    timeout: float | None = None
    on_error: str = "raise"
    fallback: Any = None
    lazy: Any = ()
    """Parameters taken as ``lf.Lazy`` inputs (``lazy.py``)."""
    map: str | None = None
    """The parameter mapped over (``mapping.py``)."""
    resources: Mapping[str, Any] | None = None
    deterministic: bool = True
    """False: the node gives a different value on every call (``provenance.py``)."""
    check: tuple[Callable[[Any], Any], ...] = ()
    """Callables the result must pass before it is stored (``engine/checks.py``)."""
    max_age: float | None = None
    """Seconds after which a stored value is a miss (``engine/freshness.py``)."""
    profile_memory: bool = False
    """Measure each call's peak memory with tracemalloc (costly; ``executors/profile.py``)."""
    priority: int = 0
    """Among ready nodes, higher starts first (and is Dask's task priority)."""
    catch: tuple[str, ...] = ()
    """Input nodes whose failure this node receives as ``lf.Failed`` (``failed.py``)."""
    lease: float | None = None
    """Seconds of the "in progress" lease taken on the remote tier before computing
    (``engine/lease.py``); ``None``: no lease."""

    @classmethod
    def of(cls, node: str, options: Mapping[str, Any]) -> NodeOptions:
        """The options of ``node`` declared as keyword arguments, validated.

        Raises :class:`DefinitionError` naming the node, the option and what is valid.
        """
        if not options:
            return DEFAULT
        unknown = sorted(set(options).difference(NAMES))
        if unknown:
            raise DefinitionError(
                f"node {node!r}: unknown option(s) {', '.join(unknown)}; valid: name, version, "
                f"cache, inputs, {', '.join(NAMES)}")
        validate_policy_options(node, options)
        deterministic = options.get("deterministic", True)
        if not isinstance(deterministic, bool):
            raise DefinitionError(f"node {node!r}: deterministic= must be True or False, "
                                  f"got {deterministic!r}")
        _check_priority(node, options)
        normalized = {**_normalized_check(node, options), **_normalized_max_age(node, options),
                      **_normalized_lease(node, options)}
        if "catch" in options:
            normalized["catch"] = normalized_catch(node, options["catch"])
        return cls(**{**options, **normalized})

    def declared(self) -> dict[str, Any]:
        """The options that differ from their defaults, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != getattr(DEFAULT, f.name)}


def _normalized_check(node: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``check=`` as a tuple of callables: one callable, or a tuple or list of them."""
    if "check" not in options:
        return {}
    check = options["check"]
    checks = tuple(check) if isinstance(check, (tuple, list)) else (check,)
    if not all(callable(c) for c in checks):
        raise DefinitionError(f"node {node!r}: check= takes a callable or a tuple of callables "
                              f"that receive the result and return true when it is good; got "
                              f"{check!r}")
    return {"check": checks}


def _normalized_max_age(node: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``max_age=`` as seconds (``durations.py``)."""
    if "max_age" not in options or options["max_age"] is None:
        return {}
    found = seconds(options["max_age"])
    if found is None:
        raise DefinitionError(f"node {node!r}: max_age= takes a positive number of seconds, a "
                              f"string such as '30m', '1h' or '2d', or a timedelta; got "
                              f"{options['max_age']!r}")
    return {"max_age": found}


LEASE = 600.0
"""Seconds of a lease taken with ``lease=True``."""


def _normalized_lease(node: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``lease=`` as seconds: ``True`` is :data:`LEASE`, ``False`` or ``None`` no lease."""
    if "lease" not in options:
        return {}
    lease = options["lease"]
    if lease is None or lease is False:
        return {"lease": None}
    found = LEASE if lease is True else seconds(lease)
    if found is None:
        raise DefinitionError(f"node {node!r}: lease= takes True (a 10-minute lease), a "
                              f"positive number of seconds, a string such as '10m' or '1h', "
                              f"or a timedelta; got {lease!r}")
    return {"lease": found}


def _check_priority(node: str, options: Mapping[str, Any]) -> None:
    priority = options.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise DefinitionError(f"node {node!r}: priority= is an integer (higher starts first "
                              f"among ready nodes); got {priority!r}")


DEFAULT = NodeOptions()
"""The options of every node declared without any (one shared instance)."""

NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(NodeOptions))
"""Every option's name, in declaration order."""
