"""How many bytes: human sizes ("500MB", "2GB", 1_000_000) to bytes and back, and the
bytes a live value holds.

Design note
-----------
:func:`sizeof` says how many bytes a live value holds, for the memory tier's byte
budget: the buffers of numpy arrays (``nbytes``) and pandas objects, the characters of
strings and bytes, and everything reachable through containers and plain objects
(their ``__dict__`` and ``__slots__``), an object reachable twice counted once (a view
counts the array it views, once).

It stays cheap on huge values: the walk looks at no more than ``limit`` objects (2,000
by default, a few milliseconds), iteratively, so nesting deeper than Python's recursion
limit is fine. Each object gets a share of that budget. An object with more elements
than a quarter of its share is sized from an evenly spaced sample of that many of
them (the first ones, for sets and dicts), scaled up to their number. Of the elements
looked at, flat ones (numbers, strings) cost one look each and the others divide what
is left of the share, so each can look inside itself in turn. An object whose share is
used up counts each of its elements at the mean size of the element-less objects seen.

Choice: extrapolate from a sample rather than count a fixed worst case: the data
values usually are (many elements of a few shapes) are estimated within a few percent.
Where it errs: an object repeated through a sampled container counts with the
sample's weight (high, the safe side for a budget), and a chain nested deeper than the
budget (a 100,000-long linked list) counts only what was looked at (low; such values
cannot be pickled either). Not walked into: classes, functions and modules (program,
not data), and objects exposing an integer ``nbytes`` (arrays and frames of other
libraries, trusted). Rejected: pandas' ``memory_usage(deep=True)``, which sizes every
Python object in a column (0.8 s for 2M Decimals); their cells are sampled instead.
"""

from __future__ import annotations

import itertools
import re
import sys
import types
from collections import deque
from collections.abc import Collection, Sequence
from typing import Any, cast

__all__ = ["format_size", "parse_size", "sizeof"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(size: int | float | str, *, what: str = "size") -> int:
    """Parse ``"500MB"``, ``"2GB"``, ``"1.5GiB"`` or a number of bytes.

    >>> parse_size("2GB")
    2000000000
    """
    if isinstance(size, bool):
        raise ValueError(f"{what} must be bytes or a string like '2GB', got {size!r}")
    if isinstance(size, (int, float)):
        if size < 0:
            raise ValueError(f"{what} must not be negative, got {size!r}")
        return int(size)
    match = _PATTERN.match(str(size))
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"{what} {size!r} is not a size: use bytes or a number with one of "
            "B, KB, MB, GB, TB, KiB, MiB, GiB, TiB (e.g. '500MB')")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(nbytes: float) -> str:
    """Format bytes for people: ``format_size(2_500_000) == '2.5 MB'``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- sizeof

LIMIT = 2_000
"""Objects :func:`sizeof` looks at, at most, per value (~1.5 µs each here)."""
_RESERVE = 4  # looks, at least, for each element that may hold more: a small container's

_FLAT = frozenset({int, float, complex, bool, str, bytes, bytearray, type(None), range})
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
           types.MethodType, types.CodeType)

Elements = Collection[Any]
"""Elements of an object: a list, tuple or array (sampled evenly) or any sized iterable
(its first ones are sampled)."""


class _Walk:
    """One sizing: the weighted total so far and the objects already counted."""

    __slots__ = ("keep", "leaves", "leaf_bytes", "seen", "total")

    def __init__(self) -> None:
        self.total = 0.0  # each object's own bytes times the number of objects it stands for
        self.leaves = 0  # objects seen that hold no elements, and their bytes: their mean
        self.leaf_bytes = 0  # stands for each element of an object with no budget left
        self.seen: set[int] = set()
        self.keep: list[Any] = []  # sampled temporaries stay alive, so their ids stay unique

    def count(self, obj: Any, weight: float) -> tuple[Elements, ...] | None:
        """Count ``obj``'s own bytes (once); return its elements, or ``None`` if seen."""
        if id(obj) in self.seen:
            return None
        self.seen.add(id(obj))
        self.keep.append(obj)
        own, elements = _parts(obj)
        self.total += weight * own
        if not elements:
            self.leaves += 1
            self.leaf_bytes += own
        return elements

    def mean_leaf(self) -> float:
        return self.leaf_bytes / self.leaves if self.leaves else 64.0


_SCALARS = frozenset({int, float, bool, complex, str, bytes, type(None)})


def sizeof(value: Any, *, limit: int = LIMIT) -> int:
    """Estimate the bytes ``value`` holds, looking at no more than ``limit`` objects.

    Exact for numpy arrays, bytes and strings, and for pandas objects but their
    Python-object cells (sampled); containers and objects are walked through their
    elements, ``__dict__`` and ``__slots__``, an object reachable twice counted once.
    The module's design note says how huge values are estimated.

    >>> import numpy as np
    >>> sizeof({"a": [[np.zeros(1000)]]}) > 8000
    True
    """
    if type(value) in _SCALARS:  # the common small result, without a walk (~2 µs)
        return sys.getsizeof(value)
    walk = _Walk()
    pending: list[tuple[Any, float, int]] = [(value, 1.0, max(int(limit), 1))]
    while pending:  # a stack, not recursion: nesting deeper than Python's limit is fine
        obj, weight, budget = pending.pop()
        elements = walk.count(obj, weight)
        if not elements:
            continue
        number = sum(len(e) for e in elements)
        if not number:  # an empty container: its own bytes are all it holds
            continue
        if budget <= 1:  # no share left to look inside: the mean leaf stands for each element
            walk.total += weight * number * walk.mean_leaf()
            continue
        budget -= 1
        taken = number if number * _RESERVE <= budget else max(1, budget // _RESERVE)
        chosen = _sample(elements, number, taken)
        walk.keep.append(chosen)
        scale = weight * number / taken
        deeper = []
        for element in chosen:  # flat elements (numbers, strings) are counted at once, so
            if type(element) in _FLAT:  # the budget goes to those that may hold more
                walk.count(element, scale)
                budget -= 1
            else:
                deeper.append(element)
        if deeper:
            share = max(budget, 0) // len(deeper)
            pending.extend((element, scale, share) for element in deeper)
    return int(walk.total)


def _sample(elements: tuple[Elements, ...], number: int, taken: int) -> list[Any]:
    """``taken`` of the ``number`` elements, evenly spaced over all of them."""
    chosen: list[Any] = []
    start = 0
    for group in elements:
        n = len(group)
        # positions i * number / taken that fall in [start, start + n)
        first = -(-start * taken // number)
        last = -(-(start + n) * taken // number)
        if last > first:
            if isinstance(group, (list, tuple)) or _is_array(group):
                indexable = cast("Sequence[Any]", group)
                chosen.extend(indexable[i * number // taken - start] for i in range(first, last))
            else:
                chosen.extend(itertools.islice(group, last - first))
        start += n
    return chosen


def _is_array(obj: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(obj, numpy.ndarray)


def _parts(obj: Any) -> tuple[int, tuple[Elements, ...]]:
    """An object's own bytes, and its elements (what it holds that is sized on its own)."""
    kind = type(obj)
    if kind in _FLAT:
        return sys.getsizeof(obj), ()
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return sys.getsizeof(obj), (obj,)
    if kind is dict:
        return sys.getsizeof(obj), (obj.keys(), obj.values())
    try:
        return _other_parts(obj)
    except Exception:  # a property that raises, a released buffer: its shallow size will do
        return sys.getsizeof(obj, 64), ()


def _other_parts(obj: Any) -> tuple[int, tuple[Elements, ...]]:
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return _array_parts(obj)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(obj, (pandas.DataFrame, pandas.Series, pandas.Index)):
        return _pandas_parts(obj, pandas)
    own = sys.getsizeof(obj, 64)
    if isinstance(obj, _OPAQUE):
        return own, ()
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and not isinstance(nbytes, bool):
        return max(own, nbytes), ()
    elements: list[Elements] = []
    if isinstance(obj, memoryview):
        elements.append((obj.obj,))
    elif isinstance(obj, dict):
        elements += [obj.keys(), obj.values()]
    elif isinstance(obj, (list, tuple, set, frozenset, deque)):
        elements.append(obj)
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        elements.append((attributes,))
    slots = _slot_values(obj)
    if slots:
        elements.append(slots)
    return own, tuple(elements)


def _slot_values(obj: Any) -> list[Any]:
    values = []
    for cls in type(obj).__mro__:
        names = cls.__dict__.get("__slots__", ())
        for name in (names,) if isinstance(names, str) else names:
            if name not in ("__dict__", "__weakref__"):
                value = getattr(obj, name, _MISSING)
                if value is not _MISSING:
                    values.append(value)
    return values


_MISSING = object()


def _array_parts(array: Any) -> tuple[int, tuple[Elements, ...]]:
    """An array's data bytes (``nbytes``), its Python objects if it has any; a view of
    another array counts nothing itself but has that array as an element, so data shared
    by several views is counted once. (Another buffer under it, such as the bytes a
    decoder read, is counted as the array's ``nbytes``.)"""
    numpy = sys.modules["numpy"]
    viewed = isinstance(array.base, numpy.ndarray)
    elements: list[Elements] = [(array.base,)] if viewed else []
    if array.dtype == object:
        elements.append(array.reshape(-1))
    return (0 if viewed else int(array.nbytes)), tuple(elements)


def _pandas_parts(obj: Any, pandas: Any) -> tuple[int, tuple[Elements, ...]]:
    """Buffers from ``memory_usage(deep=False)`` (exact for numpy, arrow and categorical
    data); the cells of Python-object columns are elements, sampled like a list's.
    Rejected: ``memory_usage(deep=True)``, which sizes every cell (0.8 s for 2M Decimals)."""
    if isinstance(obj, pandas.DataFrame):
        own = int(obj.memory_usage(index=True, deep=False).sum())
        columns = [obj.iloc[:, i] for i, dtype in enumerate(obj.dtypes) if _python_objects(dtype)]
        index = obj.index
    elif isinstance(obj, pandas.Series):
        own = int(obj.memory_usage(index=True, deep=False))
        columns, index = ([obj] if _python_objects(obj.dtype) else []), obj.index
    else:
        own, columns, index = int(obj.memory_usage(deep=False)), [], obj
    elements: list[Elements] = [c.to_numpy() for c in columns]
    if type(index) is pandas.Index and _python_objects(index.dtype):  # not a MultiIndex: its
        elements.append(index.to_numpy())  # to_numpy() would build tuples that are not held
    return own, tuple(elements)  # not sys.getsizeof: pandas answers it with deep=True


def _python_objects(dtype: Any) -> bool:
    """Whether a pandas column of ``dtype`` holds Python objects (numpy's object dtype)."""
    numpy = sys.modules["numpy"]
    return isinstance(dtype, numpy.dtype) and dtype.kind == "O"
