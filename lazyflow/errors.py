"""Every error and warning lazyflow raises on its own account.

Each error subclasses :class:`LazyflowError` *and* the builtin it resembles, so
``except KeyError`` keeps working for an unknown node and ``except ValueError``
for a cycle. Messages say what happened, to which node or parameter, and what
to do next. Exceptions raised by user code are never wrapped: they propagate
with their own type and a PEP 678 note naming the node (see ``engine/settle.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "CancelledError",
    "CheckError",
    "CycleError",
    "DefinitionError",
    "HashingError",
    "LazyflowError",
    "LazyflowWarning",
    "MapError",
    "MissingInputError",
    "NodeTimeout",
    "NotCachedError",
    "OutputError",
    "ReportError",
    "SkippedError",
    "SkippedWarning",
    "UnknownNodeError",
    "UnknownRunError",
]


class LazyflowError(Exception):
    """Base class of every error lazyflow raises itself."""


class DefinitionError(LazyflowError, ValueError):
    """A node was declared with options that cannot work (bad name, bad wiring)."""


class CycleError(LazyflowError, ValueError):
    """The nodes needed for a request depend on each other in a loop.

    ``path`` holds the node names along the cycle, first name repeated last.
    """

    def __init__(self, path: Sequence[str]) -> None:
        self.path = list(path)
        super().__init__(
            f"cycle in the flow: {' -> '.join(self.path)}; "
            "a node cannot depend on itself: rename a parameter or use inputs={...} to rewire"
        )


class UnknownNodeError(LazyflowError, KeyError):
    """A requested name is not a node of the flow (a :class:`KeyError`)."""

    def __init__(self, name: str, flow: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = (
            f"; did you mean {', '.join(repr(s) for s in self.suggestions)}?"
            if self.suggestions
            else "; define it with @flow.node first"
        )
        self.message = f"flow {flow!r} has no node {name!r}{hint}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return self.message


class MissingInputError(LazyflowError, TypeError):
    """A node needs a flow input that was neither passed nor defaulted."""

    def __init__(self, node: str, parameter: str) -> None:
        self.node = node
        self.parameter = parameter
        super().__init__(
            f"node {node!r} needs input {parameter!r}: pass flow.get(..., {parameter}=...) "
            "or give the parameter a default"
        )


class HashingError(LazyflowError, TypeError):
    """A value could not be turned into a digest, so it cannot be part of a key."""

    def __init__(self, type_name: str, reason: str, *, node: str | None = None,
                 parameter: str | None = None) -> None:
        self.type_name = type_name
        self.reason = reason
        self.node = node
        self.parameter = parameter
        where = ""
        if node is not None:
            where = f" for node {node!r}" + (f", parameter {parameter!r}" if parameter else "")
        super().__init__(
            f"cannot hash a value of type {type_name}{where} ({reason}); "
            f"register a hasher with lf.register_hasher({type_name.rsplit('.', 1)[-1]}, fn) "
            "or declare the node with cache=False"
        )

    def located(self, node: str, parameter: str | None) -> HashingError:
        """Return a copy of this error that names the node and parameter."""
        return HashingError(self.type_name, self.reason, node=node, parameter=parameter)


class OutputError(LazyflowError, TypeError):
    """A node declared with ``outputs=`` returned something that does not fit them."""


class MapError(LazyflowError, TypeError):
    """A map node's mapped input is not a list (or another iterable) of elements."""


class SkippedError(LazyflowError, LookupError):
    """A requested target was skipped and ``strict=True`` was asked (a :class:`LookupError`)."""

    def __init__(self, node: str, reason: str) -> None:
        self.node = node
        self.reason = reason
        super().__init__(f"node {node!r} was skipped ({reason}), so it has no value; "
                         "remove the cause of the skip, or call without strict=True to get None")


class NodeTimeout(LazyflowError, TimeoutError):
    """A node ran longer than its ``timeout=``."""

    def __init__(self, node: str, seconds: float, detail: str = "") -> None:
        self.node = node
        self.seconds = seconds
        super().__init__(
            f"node {node!r} did not finish within its timeout of {seconds:g}s{detail}; "
            "raise timeout= or make the node faster"
        )


class CancelledError(LazyflowError):
    """The run was cancelled before the requested nodes finished."""


class UnknownRunError(LazyflowError, KeyError):
    """No recorded run (or more than one) matches the id asked for (a :class:`KeyError`)."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


class NotCachedError(LazyflowError, LookupError):
    """A value that was asked about (lineage, verify) is not in the cache."""


class CheckError(LazyflowError, ValueError):
    """A node's result failed one of its ``check=`` callables (returned falsy or raised).

    ``node`` names the node and ``check`` the check; the result is never cached.
    """

    def __init__(self, node: str, check: str, detail: str) -> None:
        super().__init__(f"node {node!r}: check {check} failed: {detail}; the result is not "
                         "cached")
        self.node = node
        self.check = check


class ReportError(LazyflowError, ValueError):
    """``lf.report`` was called outside a running node, or with a value that is not a number."""


class LazyflowWarning(UserWarning):
    """Base class of lazyflow's warnings."""


class CacheWarning(LazyflowWarning):
    """A cache entry was ignored or a cache write failed; the value is recomputed."""


class SkippedWarning(LazyflowWarning):
    """A requested target has no value (skipped, or failed under ``on_error="skip"``);
    ``get`` returned ``None`` for it."""
