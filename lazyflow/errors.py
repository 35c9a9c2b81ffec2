"""Every error and warning lazyflow raises on its own account.

Each error subclasses :class:`LazyflowError` *and* the builtin it resembles, so
``except KeyError`` keeps working for an unknown node and ``except ValueError``
for a cycle. Messages say what happened, to which node or parameter, and what
to do next. Exceptions raised by user code are never wrapped: they propagate
with their own type and a PEP 678 note naming the node (see ``engine/settle.py``).
"""

from __future__ import annotations

import os
import sys
import types
import warnings
from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "CancelledError",
    "CheckError",
    "ConfigError",
    "ConfirmationError",
    "CycleError",
    "DefinitionError",
    "DefinitionWarning",
    "HashingError",
    "LazyflowError",
    "LazyflowWarning",
    "MapError",
    "MissingInputError",
    "NodeTimeout",
    "NotCachedError",
    "OutputError",
    "ReportError",
    "ResourcesWarning",
    "SkippedError",
    "SkippedWarning",
    "UnknownInputError",
    "UnknownNodeError",
    "UnknownRunError",
    "WiringWarning",
    "warn",
]

PYTHON_SPELLING = "flow.get(..., {name}=...)"
"""How a message tells a Python user to pass an input (``MissingInputError``, ...)."""


class LazyflowError(Exception):
    """Base class of every error lazyflow raises itself."""


class ConfigError(LazyflowError, ValueError):
    """A setting in the environment or the project file (``lazyflow.toml``) cannot be used:
    an unknown key, a value of the wrong type, a file that is not TOML."""


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
    """A node needs a flow input that was neither passed nor defaulted.

    ``spelling`` says how the message tells the user to pass an input: a
    template with ``{name}``, ``flow.get(..., {name}=...)`` in Python; the
    command line re-spells it as ``-p {name}=...`` (:meth:`respelled`).
    """

    def __init__(self, node: str, parameter: str, *, spelling: str = PYTHON_SPELLING) -> None:
        self.node = node
        self.parameter = parameter
        self.spelling = spelling
        super().__init__(
            f"node {node!r} needs input {parameter!r}: pass {spelling.format(name=parameter)} "
            "or give the parameter a default"
        )

    def respelled(self, spelling: str) -> MissingInputError:
        """This error with the fix spelled for another front end (``"-p {name}=..."``)."""
        return MissingInputError(self.node, self.parameter, spelling=spelling)


class UnknownInputError(LazyflowError, TypeError):
    """A keyword given to a request is neither a flow input nor an option of the request.

    Raised by ``get``/``run``/``explain``/``submit`` (and the command line's
    ``-p``) before anything runs. ``name`` is the keyword, ``suggestions`` its
    close matches among the flow's inputs and ``options`` among the request's
    options; ``unplanned`` names the nodes that take it when none of them is
    needed by the request (only the planned nodes' inputs count). When the keyword stands for a node (``node`` is set: it names
    the node, or a parameter wired to it), the message says so and names the
    inputs that node is computed from (``sources``).
    """

    def __init__(self, name: str, flow: str, *, suggestions: Sequence[str] = (),
                 options: Sequence[str] = (), inputs: Sequence[str] = (),
                 node: str | None = None, wired_in: str | None = None,
                 sources: Sequence[str] = (), unplanned: Sequence[str] = (),
                 spelling: str = PYTHON_SPELLING) -> None:
        self.name = name
        self.unplanned = list(unplanned)
        self.flow = flow
        self.suggestions = list(suggestions)
        self.options = list(options)
        self.inputs = list(inputs)
        self.node = node
        self.wired_in = wired_in
        self.sources = list(sources)
        self.spelling = spelling
        super().__init__(self._message())

    def _message(self) -> str:
        if self.node is not None:
            return self._node_message()
        if self.unplanned:
            taken = ", ".join(repr(n) for n in self.unplanned)
            head = (f"{self.name!r} is not an input of this request: only node(s) {taken} "
                    f"take it, and the request does not need them")
        else:
            head = (f"{self.name!r} is not an input of flow {self.flow!r}: "
                    f"no node takes a parameter {self.name!r}")
        guesses = [self._spell(s) for s in self.suggestions]
        guesses += [f"the option {o!r}" for o in self.options]
        if guesses:
            return f"{head}; did you mean {' or '.join(guesses)}?"
        if not self.inputs:
            return f"{head}; this request takes no inputs"
        shown = ", ".join(self.inputs[:8]) + (", ..." if len(self.inputs) > 8 else "")
        return f"{head}; the inputs of this request are: {shown}"

    def _node_message(self) -> str:
        if self.wired_in is None:
            head = f"{self.name!r} names a node of flow {self.flow!r}, not an input"
        else:
            head = (f"{self.name!r} is a parameter of node {self.wired_in!r} wired to node "
                    f"{self.node!r} (inputs=), not an input of flow {self.flow!r}")
        fix = (f"pass the inputs it is computed from ({', '.join(self.sources)}) instead, "
               f"or redefine node {self.node!r}" if self.sources
               else f"redefine node {self.node!r} to change its value")
        return f"{head}; a node's value cannot be given as an input — {fix}"

    def _spell(self, name: str) -> str:
        return repr(name) if self.spelling == PYTHON_SPELLING else self.spelling.format(name=name)

    def respelled(self, spelling: str, *, options: bool = True) -> UnknownInputError:
        """This error spelled for another front end; ``options=False`` drops the suggestions
        of request options (the command line takes none through ``-p``)."""
        return UnknownInputError(self.name, self.flow, suggestions=self.suggestions,
                                 options=self.options if options else (), inputs=self.inputs,
                                 node=self.node, wired_in=self.wired_in, sources=self.sources,
                                 spelling=spelling)


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


class NotServable(HashingError):
    """A value whose reader's results may never be served from a cache: a flow run as a
    node (``as_node``) that needs a node computed anew on each request. Code reading it
    is not cached, and nothing warns: nothing is wrong, only the inner flow can decide."""


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


class ConfirmationError(LazyflowError, PermissionError):
    """A delete that reaches a remote cache was asked for without confirmation.

    Raised before anything is deleted, on any tier: ``Cache.clear``/``Cache.prune``
    delete from a remote tier (shared with everyone who points at it) only with
    ``confirm=True``. ``action`` names the call, ``remotes`` the URLs it would
    delete from, ``local_tier`` a tier of this machine's to delete from instead
    (``None`` when the cache has none); :meth:`respelled` spells the fixes for
    another front end (the command line's ``--yes`` and ``--tier disk``).
    """

    def __init__(self, action: str, remotes: Sequence[str], *, local_tier: str | None = None,
                 confirm: str = "confirm=True", local: str = "tier={tier!r}") -> None:
        self.action = action
        self.remotes = list(remotes)
        self.local_tier = local_tier
        instead = "" if local_tier is None else \
            f", or {local.format(tier=local_tier)} to touch only this machine's cache"
        super().__init__(
            f"{action} would delete entries of the remote cache {', '.join(self.remotes)}, "
            f"which everyone using it shares; nothing was deleted. Pass {confirm} to delete "
            f"them{instead}")

    def respelled(self, action: str, confirm: str, local: str) -> ConfirmationError:
        """This error spelled for another front end: ``action`` as it calls the delete
        (``"lazyflow cache clear"``) and the fixes (``"--yes"``, ``"--tier {tier}"``)."""
        return ConfirmationError(action, self.remotes, local_tier=self.local_tier,
                                 confirm=confirm, local=local)


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


class WiringWarning(LazyflowWarning):
    """A parameter is probably misspelled: it matches no node but is one edit away from one,
    so it became a flow input instead of an edge (warned once per node definition)."""


class DefinitionWarning(LazyflowWarning):
    """A node replaced a node of the same name defined somewhere else (another notebook
    cell, another file or line): probably two different things got one name."""


class ResourcesWarning(LazyflowWarning):
    """A node declares more of a resource (``resources=``) than the run has in all: it
    runs alone instead (warned once per run)."""


class SkippedWarning(LazyflowWarning):
    """A requested target has no value (skipped, or failed under ``on_error="skip"``);
    ``get`` returned ``None`` for it."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB = os.path.join(os.path.dirname(os.__file__), "")
_MACHINERY_PACKAGES = ("IPython", "ipykernel", "decorator")
"""What sits between a user's line and lazyflow: IPython runs magics through these."""


def warn(message: str, category: type[Warning] = LazyflowWarning) -> None:
    """Warn at the user's line: the first caller outside lazyflow (and outside the
    standard library and IPython's machinery, which run a user's magics and threads).

    ``warnings.warn(stacklevel=...)`` counts frames, which points into lazyflow
    whenever a call reaches it by another path; ``skip_file_prefixes`` would do
    this but needs Python 3.12. Where no such frame exists (a worker thread),
    the first frame outside lazyflow is used.
    """
    frame = _user_frame(sys._getframe(1))
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    f_globals = frame.f_globals
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=f_globals.get("__name__"),
                           registry=f_globals.setdefault("__warningregistry__", {}))


def _user_frame(frame: types.FrameType | None) -> types.FrameType | None:
    """The first frame from ``frame`` outwards that is the user's, else the first outside
    lazyflow."""
    outside = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PACKAGE):
            if outside is None:
                outside = frame
            if not _is_machinery(frame):
                return frame
        frame = frame.f_back
    return outside


def _is_machinery(frame: types.FrameType) -> bool:
    filename = frame.f_code.co_filename
    if filename.startswith(("<decorator-gen-", "<frozen ")) or (
            filename.startswith(_STDLIB) and "-packages" not in filename):
        return True
    package = str(frame.f_globals.get("__name__", "")).partition(".")[0]
    return package in _MACHINERY_PACKAGES
