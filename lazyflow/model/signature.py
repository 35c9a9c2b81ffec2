"""A node function's signature: its parameters, read fast, and calling it by keyword.

Design note
-----------
Reading the parameters is on the path of every node definition (in a
notebook, every cell run): plain functions are read off their code object,
and only the rest (partials, callable objects, wrappers) goes through
``inspect``, which knows all their rules.
Everything that runs nodes calls them with keyword arguments only;
:class:`PositionalCall` is how a function with positional-only parameters is
called that way. ``graph.py``'s :class:`~lazyflow.model.graph.Node` is built
on both.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EMPTY", "PositionalCall", "read_signature"]

EMPTY: Any = inspect.Parameter.empty
"""Marks a parameter without a default."""

_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS


def read_signature(func: Callable[..., Any]) -> tuple[list[tuple[str, Any]], str | None, int]:
    """``[(parameter, default or EMPTY)]`` in order, the name of a ``*args``/``**kw`` if any, and
    how many of the parameters are positional-only.

    Plain functions are read off their code object: ``inspect.signature``
    costs ~5 µs, half a node's budget. Anything else (partials, callable
    objects, ``functools.wraps`` wrappers, ``__signature__``) goes through
    ``inspect``, which knows all their rules.
    """
    if type(func) is types.FunctionType and not hasattr(func, "__wrapped__") \
            and "__signature__" not in func.__dict__:
        code = func.__code__
        positional = code.co_argcount
        n_named = positional + code.co_kwonlyargcount
        names = code.co_varnames
        flags = code.co_flags
        if flags & (_CO_VARARGS | _CO_VARKEYWORDS):
            star = "*" if flags & _CO_VARARGS else "**"
            return [], star + names[n_named], 0
        defaults = func.__defaults__ or ()
        kwdefaults = func.__kwdefaults__ or {}
        first_default = positional - len(defaults)
        params = [(name, defaults[i - first_default] if i >= first_default else EMPTY)
                  for i, name in enumerate(names[:positional])]
        params.extend((name, kwdefaults.get(name, EMPTY)) for name in names[positional:n_named])
        return params, None, code.co_posonlyargcount
    params = []
    positional_only = 0
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return [], ("*" if p.kind is p.VAR_POSITIONAL else "**") + p.name, 0
        positional_only += p.kind is p.POSITIONAL_ONLY
        params.append((p.name, p.default))
    return params, None, positional_only


@dataclass(frozen=True, slots=True)
class PositionalCall:
    """A node function whose positional-only parameters (``def f(a, /)``) are passed by position.

    Everything that runs nodes (the engine, every executor, map elements,
    verification) calls ``node.call`` with keyword arguments only; for a
    function with positional-only parameters that is this wrapper, which moves
    them to their positions. Picklable when the function is, so it crosses to
    worker processes and Dask workers like the function itself.
    """

    func: Callable[..., Any]
    positional: tuple[str, ...]

    def __call__(self, **kwargs: Any) -> Any:
        args = []
        for param in self.positional:
            if param not in kwargs:  # the rest keep their defaults (Python's own rule)
                break
            args.append(kwargs.pop(param))
        return self.func(*args, **kwargs)
