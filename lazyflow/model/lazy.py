"""Lazy inputs: a parameter that receives a thunk, computed only if the node calls it.

Design note
-----------
Policy. A parameter annotated ``lf.Lazy[T]`` (or listed in ``lazy=("x",)``)
is an edge the scheduler does *not* wait for: the node starts once its other
inputs are settled and gets a :class:`Thunk` for ``x``. Calling ``x()``
returns the value when the engine already has it. When it does not, the thunk
raises :class:`Demand` (a ``BaseException``, so ``except Exception`` in user
code cannot swallow it); the engine resolves ``x`` (a cache hit costs no
computation), computes it if needed, and calls the node again from the top.
So ``return a() if flag else b()`` computes one branch only; the other
branch's nodes end "skipped" with reason "not needed".

Rejected alternative: a thunk that computes its input in place by calling
back into the scheduler. It blocks a worker while the input's own ancestors
need workers (a deadlock with a bounded pool) and cannot cross a process
boundary. The price of restarting is that code before the first call of an
uncomputed thunk runs again: keep it cheap and free of side effects.

Keys. Which lazy inputs a node used is known only after it ran, so it is
recorded with the entry (a *dependency trace*, as in build systems with
dynamic dependencies). The node's *base key* covers its code, parameters and
eager inputs; under it the cache keeps the traces seen so far: ordered lists
of ``(parameter, value digest)`` in call order. The result is stored under a
content key over the base key's parts plus the digests of the inputs it used.
On the next request the engine replays a trace: it resolves the first input
of the trace, compares its digest, and only then looks at the next, so it
never computes an input the function would not have asked for; a trace whose
digests all still match gives the content key, and a hit. A cached result is
therefore valid exactly while the inputs it used are unchanged; a change in
an input it did not use leaves it cached.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

import xxhash

from lazyflow.errors import DefinitionError, HashingError, OutputError
from lazyflow.keys import Domain, domain
from lazyflow.keys.hashing import register_hasher

_DOMAIN = domain(Domain.LAZY_TRACES)

if TYPE_CHECKING:
    from lazyflow.model.graph import Node

__all__ = ["Call", "Demand", "Lazy", "Thunk", "Traced", "annotated_lazy", "lazy_params", "replay",
           "stray_demand", "trace_record_key", "validate_lazy", "with_trace"]

T = TypeVar("T")

_MAX_TRACES = 16


class Lazy(Generic[T]):
    """Annotation marking a parameter as lazy: ``def pick(flag, a: lf.Lazy[list]): ...``.

    The parameter receives a :class:`Thunk`; ``a()`` computes (or fetches) the
    value. Equivalent to ``@flow.node(lazy=("a",))``.
    """


class Demand(BaseException):
    """Raised by a thunk whose value the engine has not computed yet (never seen by users)."""

    def __init__(self, param: str) -> None:
        self.param = param
        super().__init__(param)


def stray_demand(node: str, demand: Demand) -> OutputError:
    """The error of ``node`` calling a thunk it does not take lazily (another node handed it
    on in a value): the engine can compute an input only for the node that takes it."""
    error = OutputError(
        f"node {node!r} called lazy input {demand.param!r} of another node, which handed the "
        f"thunk on instead of its value; in the node that takes {demand.param!r} lazily, "
        f"call it ({demand.param}()) and pass on what it returns")
    error.__cause__ = demand
    return error


class Thunk:
    """A lazy input: call it to get the value (``x()``).

    >>> Thunk("x", value=3)()
    3
    """

    __slots__ = ("_has", "_loader", "_value", "param")

    def __init__(self, param: str, *, value: Any = None, has_value: bool = True,
                 loader: Callable[[], Any] | None = None) -> None:
        self.param = param
        self._value = value
        self._has = has_value
        self._loader = loader

    def __call__(self) -> Any:
        if not self._has:
            if self._loader is None:
                raise Demand(self.param)
            self._value, self._has, self._loader = self._loader(), True, None
        return self._value

    def __repr__(self) -> str:
        return f"<Thunk {self.param} {'ready' if self._has or self._loader else 'not computed'}>"

    def __getstate__(self) -> tuple[str, Any, bool]:
        # a loader reads this process's cache: across a process boundary the thunk
        # asks the engine instead, which then sends the value itself
        return self.param, self._value, self._has

    def __setstate__(self, state: tuple[str, Any, bool]) -> None:
        self.param, self._value, self._has = state
        self._loader = None


def _no_digest(thunk: Thunk | _Recording) -> NoReturn:
    """A thunk has no digest: its value is keyed apart, by the trace of the node that calls
    it. One found inside a value (a node returned it, or a structure holding it) would give
    that value one digest whatever the input computes to, and its dependents stale hits."""
    raise HashingError("Thunk", f"it is lazy input {thunk.param!r}, not its value: call it "
                       f"({thunk.param}()) and return or keep what it returns")


register_hasher(Thunk, _no_digest)


@dataclass(slots=True)
class Traced:
    """A lazy node's return value with the lazy parameters it called, in call order."""

    value: Any
    used: list[str] = field(default_factory=list)


# the engine hashes the unwrapped value itself; the worker's digest of a Traced is discarded
register_hasher(Traced, lambda traced: "Traced")


@dataclass(frozen=True, slots=True)
class Call:
    """A lazy node's function wrapped so that it reports which thunks it called.

    Picklable when the function is, so every executor can run it.
    """

    func: Callable[..., Any]
    lazy: frozenset[str]

    def __call__(self, **kwargs: Any) -> Traced:
        used: list[str] = []
        demanded: list[str] = []
        for param in self.lazy:
            kwargs[param] = _Recording(kwargs[param], used, demanded)
        try:
            value = self.func(**kwargs)
        except Exception:
            if demanded:  # the function turned the demand into its own error: resolve first
                raise Demand(demanded[0]) from None
            raise
        if demanded:  # a bare ``except:`` swallowed the demand: what it returned instead
            raise Demand(demanded[0])  # is not what the function computes from the input
        return Traced(value, used)


class _Recording:
    """A thunk that notes its first call in the node's trace, and any demand it raised."""

    __slots__ = ("_demanded", "_thunk", "_used")

    def __init__(self, thunk: Thunk, used: list[str], demanded: list[str]) -> None:
        self._thunk = thunk
        self._used = used
        self._demanded = demanded

    def __call__(self) -> Any:
        try:
            value = self._thunk()
        except Demand:
            self._demanded.append(self._thunk.param)
            raise
        if self._thunk.param not in self._used:
            self._used.append(self._thunk.param)
        return value

    def __repr__(self) -> str:
        return repr(self._thunk)

    @property
    def param(self) -> str:
        """The lazy parameter it stands for."""
        return self._thunk.param


register_hasher(_Recording, _no_digest)


# --------------------------------------------------------------------------- declaration

_ANNOTATED: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()
_LAZY_TEXT = re.compile(r"^(?:[\w.]+\.)?Lazy\[")


def lazy_params(node: Node) -> frozenset[str]:
    """The lazy parameters of ``node``: its ``lazy=`` option plus those annotated ``Lazy[...]``."""
    declared = node.options.lazy
    annotated = annotated_lazy(node.func)
    # the shared empty set for the usual node: one object less per node for the GC to walk
    return frozenset(declared) | annotated if declared else annotated


_NONE: frozenset[str] = frozenset()


def annotated_lazy(func: Callable[..., Any]) -> frozenset[str]:
    """The parameters of ``func`` annotated ``Lazy[...]`` (memoised per function)."""
    if type(func) is types.FunctionType and not hasattr(func, "__wrapped__") \
            and "__signature__" not in func.__dict__:
        # a plain function's annotations are inspect.signature's, without its ~5 µs a node
        annotations = func.__annotations__
        if not annotations:
            return _NONE
        # a plain class (``int``) is never lazy but Lazy itself: no getattr that fails
        found = [name for name, annotation in annotations.items() if name != "return" and (
            annotation is Lazy or (type(annotation) is not type and _is_lazy(annotation)))]
        return frozenset(found) if found else _NONE
    try:
        annotated = _ANNOTATED.get(func)
    except TypeError:  # not weak-referenceable
        annotated = None
    if annotated is None:
        annotated = frozenset(name for name, p in _parameters(func).items()
                              if _is_lazy(p.annotation))
        with contextlib.suppress(TypeError):
            _ANNOTATED[func] = annotated
    return annotated


def _parameters(func: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}


def _is_lazy(annotation: Any) -> bool:
    if isinstance(annotation, str):  # ``from __future__ import annotations``
        return bool(_LAZY_TEXT.match(annotation.strip()))
    return getattr(annotation, "__origin__", None) is Lazy or annotation is Lazy


def validate_lazy(node: str, params: Sequence[str], option: Any) -> None:
    """Check a ``lazy=`` option: a tuple of the function's parameter names."""
    if option is None or option == ():
        return
    if isinstance(option, str) or not isinstance(option, (tuple, list, frozenset, set)):
        raise DefinitionError(f"node {node!r}: lazy= takes a tuple of parameter names, "
                              f"like lazy=('a', 'b'); got {option!r}")
    unknown = [p for p in option if p not in params]
    if unknown:
        raise DefinitionError(f"node {node!r}: lazy= names {', '.join(map(repr, unknown))}, "
                              f"which the function does not take; its parameters are "
                              f"{', '.join(params) or 'none'}")


# --------------------------------------------------------------------------- traces


def trace_record_key(base_key: str) -> str:
    """Where the dependency traces of a lazy node's base key are recorded."""
    return xxhash.xxh3_128_hexdigest(f"{_DOMAIN}{base_key}".encode())


def replay(traces: Sequence[Sequence[Sequence[str]]], digest_of: Callable[[str], str | None]
           ) -> tuple[str, Any]:
    """Replay recorded traces against current input digests, one input at a time.

    ``digest_of(param)`` gives the current digest of a lazy input, or ``None``
    when it is not resolved yet. Returns ``("hit", {param: digest})`` for a
    trace that still holds, ``("need", param)`` when the next input to compare
    must be resolved first, or ``("miss", None)`` when no trace holds.
    """
    candidates = [list(t) for t in traces]
    depth = 0
    while candidates:
        for trace in candidates:
            if len(trace) == depth:
                return "hit", {p: d for p, d in trace}
        param = candidates[0][depth][0]
        digest = digest_of(param)
        if digest is None:
            return "need", param
        candidates = [t for t in candidates if t[depth][0] == param and t[depth][1] == digest]
        depth += 1
    return "miss", None


def with_trace(traces: Sequence[Sequence[Sequence[str]]] | None,
               trace: Sequence[Sequence[str]]) -> list[list[list[str]]]:
    """``traces`` with ``trace`` added last (kept once; the oldest dropped past a bound)."""
    new = [list(step) for step in trace]
    kept = [old for old in ([list(step) for step in t] for t in traces or ()) if old != new]
    return [*kept, new][-_MAX_TRACES:]
