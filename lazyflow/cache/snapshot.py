"""What the memory tier keeps of a value, and what it hands out: nobody can change the kept one.

Design note
-----------
Policy. The memory tier keeps live objects, and whoever receives one could change it in
place (``x.clear()``, ``a[0] = 1``, ``df.loc[0, "a"] = 1``): the cached value would then
no longer match its digest, nor what the disk tier returns for the same key. So the tier
never hands out what it keeps. ``put`` takes a private :func:`snapshot` of the value,
which no caller holds; every ``get`` hands out a fresh :meth:`Snapshot.handout` that
cannot reach back into it. Both are chosen per type by measured cost
(``benchmarks/protection.py``, figures from one run on these machines):

* immutable values (numbers, strings, bytes, ``None``, dates, decimals, paths, enum
  members, tuples and frozensets of such) are kept and handed out as they are: free,
  and nothing can change them;
* numpy arrays (not of Python objects) are kept as a private read-only copy and handed
  out as read-only views of it: a view costs ~0.3 µs where a copy of 80 MB costs ~22 ms,
  nearly as much as reading it from the disk tier (~30 ms);
* pandas objects are kept as a shallow copy and handed out as shallow copies, which
  copy-on-write (always on from pandas 3, the ``mode.copy_on_write`` option before)
  makes independent: ~15 µs for 72 MB, where a deep copy costs ~14 ms (the fallback
  where copy-on-write is off); but not those holding mutable Python objects (lists,
  dicts...) in an ``object`` column: every copy of a frame shares those, so they are
  pickled as below;
* everything else (lists, dicts, sets, objects of your classes, object arrays) is kept
  as a pickle stream, with the arrays and pandas objects inside it kept and handed out
  as above, and handed out by unpickling the stream: a fresh copy built with the
  pickler the disk tier uses (cloudpickle), so equal to what the disk tier returns,
  sharing inside the value included. A list of 1M floats unpickles in ~36 ms
  (``copy.deepcopy``: ~150 ms); for big pure-Python containers that is about what a
  disk hit costs, the price of a copy. An object holding an 80 MB array: ~0.3 ms;
* a value that cannot be pickled is kept as it is with its digest (``lf.hash_value``),
  and handed out only while it still has that digest: it cannot be protected, but a
  change to it is noticed and the entry dropped, never served.

A snapshot copies what the tier did not create (a node's result may still be held, and
changed, by the node's own code, or be a module-level array other code writes to);
``owned=True`` adopts a value that a slower tier has just decoded and that nobody else
holds: its arrays are frozen in place (made read-only) instead of copied. The caller
holds them too, and numpy lets anyone set ``flags.writeable = True`` back on an array
that owns its memory or views a writeable buffer: so an adopted array is frozen with
every array it views, and adopted only when its memory ends in an array so frozen or a
read-only buffer (the disk tier reads into numpy buffers and decodes arrays over them,
``serialize.py``); otherwise it is copied.

Rejected: checking the digest of every mutable value on every hit (hashing a list of 1M
floats costs ~310 ms, nine times unpickling it, a 72 MB frame ~200 ms; arrays ~6 ms per
80 MB where a view costs nothing); ``copy.deepcopy`` (2-4x slower than unpickling,
~700x for an object holding an array, which it copies); keeping a node's
own array frozen in place instead of a copy (a node returning a module-level array
would make it read-only for the rest of the program).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import io
import pathlib
import pickle
import sys
import uuid
from typing import Any

import cloudpickle

from lazyflow.cache.base import CorruptEntryError
from lazyflow.cache.sizes import sizeof
from lazyflow.keys.hashing import hash_value

__all__ = ["Snapshot", "TooLarge", "handout", "snapshot"]

_IMMUTABLE = frozenset({int, float, complex, bool, str, bytes, type(None), type(Ellipsis),
                        range, decimal.Decimal, fractions.Fraction, datetime.date,
                        datetime.datetime, datetime.time, datetime.timedelta,
                        datetime.timezone, uuid.UUID})
_IMMUTABLE_BASES = (pathlib.PurePath, enum.Enum)  # enum members unpickle as themselves anyway
_LOOK = 10_000  # elements of nested tuples and frozensets looked at, at most


class TooLarge(Exception):
    """The value's snapshot would take more bytes than the caller allows."""


class Snapshot:
    """A kept value: hands out copies or read-only views, never itself."""

    __slots__ = ("nbytes",)

    nbytes: int
    """Bytes the snapshot holds (what the memory tier's budget counts)."""

    def handout(self) -> Any:
        """A fresh value equal to the kept one; changing it cannot change the kept one."""
        raise NotImplementedError


def handout(kept: Any) -> Any:
    """What a reader of ``kept`` (a :class:`Snapshot` or an immutable value) gets."""
    return kept.handout() if isinstance(kept, Snapshot) else kept


def snapshot(value: Any, *, owned: bool = False, max_bytes: int | None = None) -> Any:
    """A private copy of ``value`` to keep: the value itself when immutable, else a Snapshot.

    ``owned``: nobody else holds ``value`` (it was just decoded), so its arrays may be
    frozen in place rather than copied. Raises :class:`TooLarge` as soon as the snapshot
    would exceed ``max_bytes`` (nothing is copied past that point).

    >>> kept = snapshot([1, 2, 3])
    >>> copy = handout(kept); copy.append(4); handout(kept)
    [1, 2, 3]
    """
    if immutable(value):
        return value
    leaf = _leaf(value, owned, max_bytes)
    if leaf is not None:
        return leaf
    try:
        return _Pickled(value, owned, max_bytes)
    except TooLarge:
        raise
    except Exception:  # cannot be pickled (a lock, an open file...): watch it instead
        return _Watched(value)


def shareable(value: Any) -> Any:
    """What to keep of a value several readers take, each by :func:`handout`: a snapshot,
    so no reader's change in place reaches another; the value itself when it cannot be
    copied (the engine shares those as they are, as before)."""
    if immutable(value):
        return value
    try:
        kept = snapshot(value)
    except Exception:  # a snapshot would need a digest it cannot take (unhashable values)
        return value
    return value if isinstance(kept, _Watched) else kept


def immutable(value: Any) -> bool:
    """Whether nothing reachable from ``value`` can change (tuples looked into, up to a point)."""
    pending = [value]
    looked = 0
    while pending:
        obj = pending.pop()
        kind = type(obj)
        if kind in _IMMUTABLE:
            continue
        if (kind is tuple or kind is frozenset
                or (isinstance(obj, (tuple, frozenset)) and not hasattr(obj, "__dict__"))):
            if set(map(type, obj)) <= _IMMUTABLE:  # flat: checked at C speed, any length
                continue
            looked += len(obj)
            if looked > _LOOK:
                return False  # checking further would cost more than copying it safely
            pending.extend(x for x in obj if type(x) not in _IMMUTABLE)
        elif not (isinstance(obj, _IMMUTABLE_BASES) or _numpy_scalar(obj)):
            return False
    return True


def _numpy_scalar(obj: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return (numpy is not None and isinstance(obj, numpy.generic)
            and not isinstance(obj, (numpy.void, numpy.object_)))


# --------------------------------------------------------------------------- leaves


def _leaf(value: Any, owned: bool, max_bytes: int | None) -> Snapshot | None:
    """A numpy array or pandas object kept on its own; ``None`` for other values."""
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value) is numpy.ndarray and not value.dtype.hasobject:
        _check(int(value.nbytes), max_bytes)
        return _Array(value, owned)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)) \
            and not _holds_mutable_objects(value):
        size = sizeof(value)
        _check(size, max_bytes)
        return _Pandas(value, size)
    return None


def _holds_mutable_objects(frame: Any) -> bool:
    """Whether a DataFrame or Series holds Python objects that can change in place (lists,
    dicts... in an ``object`` column). A copy of the frame, shallow or deep, shares those
    objects (pandas copies no Python object), so it is pickled like any other value
    instead: a reader appending to a list in a cell must not change the kept frame."""
    if frame.ndim == 1:
        columns = [frame] if str(frame.dtype) == "object" else []
    else:
        columns = [frame.iloc[:, i] for i, dtype in enumerate(frame.dtypes) if str(dtype) == "object"]
    for column in columns:
        values = column.to_numpy()
        if not set(map(type, values)) <= _IMMUTABLE and not all(map(immutable, values)):
            return True
    return False


def _check(size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(size)


class _Array(Snapshot):
    """A private read-only array; handed out as read-only views of it."""

    __slots__ = ("array",)

    def __init__(self, array: Any, owned: bool) -> None:
        if not (owned and _freeze_for_good(array)):
            array = array.copy(order="K")
            array.flags.writeable = False
        self.array = array
        self.nbytes = int(array.nbytes)

    def handout(self) -> Any:
        return self.array.view()  # a view of a read-only array is read-only, and stays so


def _freeze_for_good(array: Any) -> bool:
    """Make ``array`` read-only so that whoever holds it cannot make it writeable again.

    An adopted array is still held by the caller that decoded it (``Cache.load``
    returns it too), and numpy lets anyone set ``flags.writeable = True`` back on an
    array that owns its memory, or that views an array or buffer still writeable (the
    usual cure for "assignment destination is read-only"): the write would then
    change the memory tier's value. So every array it views is made read-only too
    (nobody else holds them: the value was just decoded); ``False`` when that cannot
    hold (it owns its memory, or views a writeable buffer that is not an array), and
    the caller copies it instead. Costs a few attribute reads.
    """
    array.flags.writeable = False
    base = array.base
    if base is None:
        return False
    numpy = sys.modules["numpy"]
    while isinstance(base, numpy.ndarray):
        base.flags.writeable = False
        if base.base is None:
            return True
        base = base.base
    try:
        return memoryview(base).readonly
    except TypeError:
        return False


def _copy_on_write(pandas: Any) -> bool:
    """Whether pandas copies shared data before a write (so shallow copies are independent)."""
    if int(pandas.__version__.partition(".")[0]) >= 3:
        return True
    return pandas.options.mode.copy_on_write is True


class _Pandas(Snapshot):
    """A DataFrame or Series; shallow copies under copy-on-write, deep copies otherwise."""

    __slots__ = ("frame",)

    def __init__(self, frame: Any, size: int) -> None:
        self.frame = frame.copy(deep=not _copy_on_write(sys.modules["pandas"]))
        self.nbytes = size

    def handout(self) -> Any:
        return self.frame.copy(deep=not _copy_on_write(sys.modules["pandas"]))


# --------------------------------------------------------------------------- pickled


def _handout_leaf(index: int) -> Any:
    """Stands in a kept pickle stream for leaf ``index``; resolved by ``_Unpickler``."""
    raise RuntimeError("a memory-tier snapshot was unpickled outside the memory tier")


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    """cloudpickle, with arrays and pandas objects kept aside as leaves (not copied into
    the stream). ``reducer_override`` is not called for builtin containers and scalars,
    so they pickle at full C speed."""

    def __init__(self, file: io.BytesIO, owned: bool, max_bytes: int | None) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.leaves: list[Snapshot] = []
        self.leaf_bytes = 0
        self._owned = owned
        self._max_bytes = max_bytes

    def reducer_override(self, obj: Any) -> Any:
        room = None if self._max_bytes is None else self._max_bytes - self.leaf_bytes
        leaf = _leaf(obj, self._owned, room)
        if leaf is None:
            return super().reducer_override(obj)
        self.leaves.append(leaf)  # the pickler memoizes obj: a shared array is one leaf
        self.leaf_bytes += leaf.nbytes
        return _handout_leaf, (len(self.leaves) - 1,)


class _Bounded(io.BytesIO):
    """A stream that stops the pickler once it holds more than ``limit`` bytes."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        written = super().write(data)
        if self.limit is not None and self.tell() > self.limit:
            raise TooLarge(self.tell())
        return written


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: bytes, leaves: tuple[Snapshot, ...]) -> None:
        super().__init__(io.BytesIO(stream))
        self._leaves = leaves

    def find_class(self, module: str, name: str) -> Any:
        if name == "_handout_leaf" and module == __name__:
            return self._handout_leaf
        return super().find_class(module, name)

    def _handout_leaf(self, index: int) -> Any:
        return self._leaves[index].handout()


class _Pickled(Snapshot):
    """A pickle stream and its leaves; handed out by unpickling (a fresh copy each time)."""

    __slots__ = ("leaves", "stream")

    def __init__(self, value: Any, owned: bool, max_bytes: int | None) -> None:
        stream = _Bounded(max_bytes)
        pickler = _Pickler(stream, owned, max_bytes)
        pickler.dump(value)
        self.stream = stream.getvalue()
        self.leaves = tuple(pickler.leaves)
        self.nbytes = len(self.stream) + pickler.leaf_bytes
        _check(self.nbytes, max_bytes)

    def handout(self) -> Any:
        try:
            if not self.leaves:  # ~20% faster than an Unpickler over a BytesIO
                return pickle.loads(self.stream)
            return _Unpickler(self.stream, self.leaves).load()
        except Exception as e:  # pickles but does not unpickle (a broken __setstate__...):
            raise CorruptEntryError(  # the hierarchy drops it, as it would from disk
                f"its copy does not unpickle: {type(e).__name__}: {e}") from e


class _Watched(Snapshot):
    """A value that cannot be copied, kept as it is: handed out while its digest holds."""

    __slots__ = ("digest", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self.digest = hash_value(value)
        self.nbytes = sizeof(value)

    def handout(self) -> Any:
        if hash_value(self.value) != self.digest:
            raise CorruptEntryError("its value was changed in place after it was stored "
                                    "(it cannot be copied, so it was handed out as it is)")
        return self.value
