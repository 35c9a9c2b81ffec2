"""Turn a command-line string into the value a node's parameter is annotated to take.

Design note
-----------
``lazyflow run ... -p name=value`` gives every input as text. One converter,
driven by the parameter's annotation, turns it into a value: ``int``,
``float``, ``str`` and ``pathlib`` paths by their constructors; ``bool`` only
from explicit words (``true/false``, ``yes/no``, ``1/0``, any case), because
``bool("False")`` is ``True``; an ``Enum`` member by its name; a ``Literal``
value by its spelling; ``Optional``/``Union`` member by member (``None`` from
``None``/``none``; a ``str`` member last, since it takes any text); ``list``,
``tuple``, ``set`` and ``dict`` from a Python literal. String annotations
(``from __future__ import annotations``) are resolved with
:func:`typing.get_type_hints`. ``Annotated[T, ...]`` converts as ``T``.

A parameter without an annotation keeps the rule the command line always had
(a Python literal if the text is one, else the text), except that a ``bool``
or ``Enum`` default stands in for the annotation: without it, ``-p
verbose=false`` would give the true string ``"false"``. An annotation the
converter does not know (a class of the user's, ``lf.File``) keeps that rule
too: it never refuses what it cannot judge.

A value that does not convert raises :class:`ConversionError` saying what was
expected; the command line names the parameter and the value around it.
"""

from __future__ import annotations

import ast
import enum
import inspect
import pathlib
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ConversionError", "annotation_of", "convert", "describe"]

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_NONE = frozenset({"None", "none"})
_CONTAINERS: dict[Any, type] = {list: list, tuple: tuple, set: set, frozenset: frozenset,
                                dict: dict}


class ConversionError(ValueError):
    """A text does not convert to the annotated type; ``expected`` describes that type."""

    def __init__(self, text: str, expected: str) -> None:
        self.text = text
        self.expected = expected
        super().__init__(f"{text!r} is not {expected}")


def annotation_of(func: Callable[..., Any], parameter: str) -> Any:
    """The annotation ``convert`` follows for ``func``'s ``parameter``.

    String annotations are resolved; an unannotated parameter with a ``bool``
    or ``Enum`` default gives that default's type; else ``inspect.Parameter.empty``.

    >>> def f(n: "int", verbose=False, path="a.csv"): ...
    >>> annotation_of(f, "n"), annotation_of(f, "verbose"), annotation_of(f, "path")
    (<class 'int'>, <class 'bool'>, <class 'inspect._empty'>)
    """
    try:
        declared = inspect.signature(func).parameters.get(parameter)
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return inspect.Parameter.empty
    if declared is None:
        return inspect.Parameter.empty
    annotation = declared.annotation
    if isinstance(annotation, str):
        annotation = _resolved(func, parameter, annotation)
    if annotation is inspect.Parameter.empty and \
            isinstance(declared.default, (bool, enum.Enum)):
        return type(declared.default)
    return annotation


def _resolved(func: Callable[..., Any], parameter: str, text: str) -> Any:
    """A string annotation evaluated where the function was defined; empty if it cannot be."""
    func = inspect.unwrap(func)
    try:
        return typing.get_type_hints(func).get(parameter, inspect.Parameter.empty)
    except Exception:  # another parameter's annotation does not resolve: try this one alone
        pass
    try:
        return eval(text, dict(getattr(func, "__globals__", {})))  # what get_type_hints does
    except Exception:  # a name that does not resolve: judge nothing, as for no annotation
        return inspect.Parameter.empty


def convert(text: str, annotation: Any) -> Any:
    """The value ``text`` stands for under ``annotation``; raises :class:`ConversionError`.

    >>> convert("false", bool), convert("3", int | None), convert("None", int | None)
    (False, 3, None)
    >>> convert("10", str), convert("[1, 2]", inspect.Parameter.empty)
    ('10', [1, 2])
    >>> convert("ten", int)
    Traceback (most recent call last):
    lazyflow.model.convert.ConversionError: 'ten' is not an int
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return convert(text, typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return _union(text, typing.get_args(annotation))
    if origin is typing.Literal:
        return _literal(text, typing.get_args(annotation))
    container = _CONTAINERS.get(origin if origin is not None else annotation)
    if container is not None:
        return _container(text, container)
    if annotation is None or annotation is type(None):
        if text in _NONE:
            return None
        raise ConversionError(text, "None")
    if not isinstance(annotation, type) or annotation is object:
        return _python_literal(text)  # no annotation, Any, a forward reference left unresolved
    if annotation is bool:
        return _bool(text)
    if issubclass(annotation, enum.Enum):
        return _member(text, annotation)
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ConversionError(text, describe(annotation)) from None
    if annotation is str:
        return text
    if issubclass(annotation, pathlib.PurePath):
        return annotation(text)
    return _python_literal(text)  # a class of the user's: as without an annotation


def describe(annotation: Any) -> str:
    """What values ``annotation`` takes, for messages: ``'an int'``, ``"one of 'a', 'b'"``.

    >>> describe(bool), describe(typing.Optional[float])
    ('a bool (true/false, yes/no, 1/0)', 'a float or None')
    """
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return describe(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(describe(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is bool:
        return "a bool (true/false, yes/no, 1/0)"
    cls = origin if origin is not None else annotation
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return f"a {cls.__name__} (one of {', '.join(cls.__members__)})"
    if cls in _CONTAINERS:
        return f"a {cls.__name__} literal such as {_EXAMPLES[cls]}"
    name = getattr(cls, "__name__", str(cls))
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


_EXAMPLES = {list: "[1, 2]", tuple: "(1, 2)", set: "{1, 2}", frozenset: "{1, 2}",
             dict: "{'a': 1}"}


def _python_literal(text: str) -> Any:
    """The command line's rule without an annotation: a Python literal, else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConversionError(text, describe(bool))


def _member(text: str, cls: type[enum.Enum]) -> enum.Enum:
    name = text.removeprefix(f"{cls.__name__}.")  # Color.RED as well as RED
    try:
        return cls[name]
    except KeyError:
        raise ConversionError(text, describe(cls)) from None


def _union(text: str, members: Sequence[Any]) -> Any:
    if type(None) in members and text in _NONE:
        return None
    # a str member takes any text: try it last, so Union[str, int] reads "3" as 3
    ordered = [m for m in members if m is not str and m is not type(None)]
    ordered += [m for m in members if m is str]
    for member in ordered:
        try:
            return convert(text, member)
        except ConversionError:
            continue
    raise ConversionError(text, " or ".join(describe(m) for m in members))


def _literal(text: str, values: Sequence[Any]) -> Any:
    for value in values:
        try:
            if convert(text, type(value)) == value:
                return value
        except ConversionError:
            continue
    raise ConversionError(text, "one of " + ", ".join(repr(v) for v in values))


def _container(text: str, cls: type) -> Any:
    value = _python_literal(text)
    if isinstance(value, cls):
        return value
    # a list or tuple literal is fine for any sequence or set annotation; a dict needs a dict
    if cls is not dict and isinstance(value, (list, tuple, set, frozenset)):
        return cls(value)
    raise ConversionError(text, describe(cls))
