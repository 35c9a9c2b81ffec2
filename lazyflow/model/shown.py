"""What people may read of a flow input's value: :class:`Secret`, the redaction rule, and
the short text the run history, lineage and the widget show.

Design note
-----------
Policy. A flow input reads as its value when it is small — ``None``, booleans,
numbers, strings and bytes, paths, dates and times, and tuples of at most
:data:`ITEMS_MAX` of these — and its ``repr`` is at most :data:`TEXT_MAX`
characters (``n=3``, ``path='a.csv'``). Anything else reads as its type and
shape in angle brackets (``<ndarray float64 (1000, 3)>``, ``<DataFrame
(400000, 5)>``, ``<list len 1000>``, ``<str len 5000>``), which no small
value's ``repr`` starts with: a reader shows the digest next to it. A
redacted input reads as :data:`REDACTED`: every :class:`Secret`, and every
parameter whose name contains one of :data:`SECRET_WORDS` (any case), whatever
its value.

Where: only records that stay on this machine hold the text (the run history,
``history/rows.py``; a lineage printed for a request, which has the values in
hand; the widget's details). Cache metadata, which travels to a shared
remote, holds digests only.

A :class:`Secret` is handed to its node as it is (the node calls
:meth:`Secret.reveal`), so it can never reach a log, a repr or the history by
accident; its digest is that of a ``Secret`` holding the value, so another
secret is another key (never a stale hit) and a secret is another input than
its plain value (the node sees another object). Rejected: unwrapping secrets
before the call with the wrapped value's digest — every place the engine
hands over inputs (each executor, map elements, sub-flows) would have to
unwrap, and one missed path would print the secret.

The text depends only on the parameter's name and the value's digest (the
digest covers type and value; a ``repr`` is a function of them for the small
types), which is what lets the history build it once per request shape. Only
immutable values are spelled out: the history may build the text a moment after
the request, and a list changed in place meanwhile would read as a value it never
had (a list reads as ``<list len 3>``).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import fractions
import numbers
import re
from collections.abc import Mapping
from pathlib import PurePath
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

__all__ = ["ITEMS_MAX", "REDACTED", "SECRET_WORDS", "TEXT_MAX", "Secret", "Shown", "as_shown", "describe",
           "is_described", "is_redacted", "printed", "shown", "shown_inputs"]

TEXT_MAX: Final = 200
"""Longest ``repr`` (characters) kept as an input's value; a longer one reads by type."""
ITEMS_MAX: Final = 8
"""Most items of a tuple kept by value."""
REDACTED: Final = "<redacted>"
"""How a redacted input reads."""
SECRET_WORDS: Final = ("token", "password", "passwd", "secret", "key", "credential")
"""A parameter whose name contains one of these (any case) is redacted."""

_SECRET_NAME = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)
_SCALARS = (str, bytes, PurePath, _dt.date, _dt.time, _dt.timedelta, decimal.Decimal,
            fractions.Fraction)

T = TypeVar("T")


class Secret(Generic[T]):
    """A flow input whose value is never shown: ``repr``, the run history, lineage, the
    widget and error messages all read ``Secret('***')``.

    The node receives the ``Secret`` itself and reads the value with :meth:`reveal`::

        @flow.node
        def prices(day, api_key):
            return fetch(day, headers={"X-Key": api_key.reveal()})

        flow.get("prices", day="2024-03-01", api_key=lf.Secret(os.environ["API_KEY"]))

    It keys like any input: the digest covers the wrapped value, so a new secret
    recomputes (never a stale hit), and ``Secret(v)`` is a different input from
    ``v``. Parameters named like ``*token*``, ``*password*``, ``*key*`` or
    ``*secret*`` are redacted in the history even when passed plainly.
    A digest is no password hash: a short, guessable secret can be found from
    its digest by trying candidates, so keep such caches private.
    """

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def reveal(self) -> T:
        """The wrapped value."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return type(other) is Secret and bool(self._value == other._value)

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret[T]], tuple[T]]:
        # pickling (worker processes) and hashing (lf.hash_value reads __reduce_ex__) both
        # see the class and the wrapped value, nothing else
        return Secret, (self._value,)


def is_redacted(name: str) -> bool:
    """Whether a parameter's name hides its value (``api_key``, ``TOKEN``, ``db_password``).

    >>> is_redacted("api_key"), is_redacted("Password"), is_redacted("n")
    (True, True, False)
    """
    return _SECRET_NAME.search(name) is not None


def is_described(text: str) -> bool:
    """Whether ``text`` (from :func:`shown`) describes a value rather than spelling it."""
    return text.startswith("<")


def printed(text: str | None, digest: str) -> str:
    """An input as a record prints it: its text (:func:`shown`), with the digest's first 12
    characters when the text only describes the value; the digest alone without a text.

    >>> printed("3", "21f2a9c0e1d3aa"), printed("<list len 9>", "21f2a9c0e1d3aa")
    ('3', '<list len 9> 21f2a9c0e1d3')
    """
    if text is None:
        return digest[:12]
    return f"{text} {digest[:12]}" if is_described(text) and text != REDACTED else text


def shown(name: str, value: Any) -> str:
    """How the flow input ``name`` reads with ``value``: its ``repr`` when small,
    :data:`REDACTED` when secret, else its type and shape in angle brackets.

    >>> shown("n", 3), shown("path", "a.csv"), shown("api_key", "abc")
    ('3', "'a.csv'", '<redacted>')
    >>> shown("rows", list(range(1000))), shown("label", "x" * 300)
    ('<list len 1000>', '<str len 300>')
    """
    if type(value) is Shown:
        return str(value)
    if type(value) is Secret or is_redacted(name):
        return REDACTED
    text = _small(value)
    return text if text is not None else f"<{describe(value)}>"


class Shown(str):
    """An input's text as :func:`shown` made it, standing in for its value where the value
    must not be kept alive: a finished run waiting for the history's writer would hold
    a 10 GB frame the notebook has long deleted."""

    __slots__ = ()


def as_shown(params: Any) -> dict[str, Mapping[str, Shown]]:
    """A request's flow-input values (node -> parameter -> value) as their texts."""
    # most nodes take no flow input: they share one empty mapping (a cold 1,000-node run
    # built 1,000 empty dicts here, ~3% of its time)
    return {node: {name: Shown(shown(name, value)) for name, value in node_params.items()}
            if node_params else _NO_VALUES for node, node_params in params.items()}


_NO_VALUES: Mapping[str, Shown] = MappingProxyType({})


def shown_inputs(params: Any) -> dict[str, str]:
    """:func:`shown` of each flow input of a request (node -> parameter -> value), one entry
    per parameter as ``Run.inputs`` has it (the last node taking it, in plan order)."""
    values: dict[str, Any] = {}
    for node_params in params.values():
        values.update(node_params)
    return {name: shown(name, value) for name, value in values.items()}


def describe(value: Any) -> str:
    """A value's type and shape: ``ndarray float64 (1000, 3)``, ``DataFrame (10, 2)``,
    ``list len 1000``, or its type's name."""
    kind = type(value).__name__
    try:
        shape = getattr(value, "shape", None)
        if shape is not None and not callable(shape):
            dims = tuple(int(d) for d in shape)
            dtype = getattr(value, "dtype", None)
            return f"{kind} {dtype} {dims}" if dtype is not None and not callable(dtype) \
                else f"{kind} {dims}"
        if hasattr(value, "__len__"):
            return f"{kind} len {len(value)}"
    except Exception:  # a shape or length that cannot be read: the type says enough
        pass
    return kind


def _small(value: Any, depth: int = 0) -> str | None:
    """The ``repr`` of a small value, else ``None``."""
    if value is None or isinstance(value, (bool, numbers.Number, *_SCALARS)):
        if isinstance(value, (str, bytes)) and len(value) > TEXT_MAX:
            return None  # its repr is longer still: not built
        try:
            text = repr(value)
        except Exception:
            return None
    elif type(value) is tuple and len(value) <= ITEMS_MAX and depth < 2:
        if any(_small(item, depth + 1) is None for item in value):
            return None
        text = repr(value)
    else:
        return None
    return text if len(text) <= TEXT_MAX and not text.startswith("<") else None
