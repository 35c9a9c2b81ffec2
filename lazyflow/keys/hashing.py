"""Value digests: ``hash_value(obj) -> str``, by type dispatch.

Design note
-----------
The rule: two values that can behave differently never share a digest, even
when they compare equal; two values of one type that agree in every digested
detail share one (``docs/caching.md`` lists the details per type). So the
*type* is always part of a digest (``1`` and ``IntEnum`` 1, a tuple and a
namedtuple, a dict and a ``defaultdict`` differ), and so are ``-0.0``, a
Decimal's exponent, a datetime's tz identity and fold, a dict's insertion
order, pandas and numpy metadata.

A digest is xxh3-128 over a *stream of tagged, length-prefixed chunks*. Every
type writes a one-byte tag, then its content; containers write their length
first, so ``['a-b', 'c']`` and ``['a', 'b-c']`` can never meet (joining strings,
as dask's tokenize does, lets them collide). Dicts are hashed in insertion
order (``pd.DataFrame(d)`` and ``json.dumps(d)`` follow it); sets hash each
member on its own and feed the *sorted* member digests, so their iteration
order (which depends on ``PYTHONHASHSEED``) never matters.

Dispatch is a dict lookup on ``type(obj)``, then a walk of the MRO; a subclass
of a built-in type writes its own type first. numpy and pandas hashers are
registered lazily the first time a type from those packages is seen, so
``import lazyflow`` imports neither. Any other object is hashed by its
``__reduce_ex__`` — its class, constructor arguments and state, recursively —
never by pickle bytes (cloudpickle embeds per-process ids for classes defined
in ``__main__``, so those bytes differ between processes). Code — functions,
classes, modules — is hashed by the code hasher :mod:`lazyflow.keys.fingerprint`
registers, so a value that carries code (a class, an enum member, a
``functools.partial``) changes when that code is edited.

A long list or tuple of one exact scalar type (ints, floats, strings or bytes)
is digested by ``flat.py`` at buffer speed: the same stream, built with numpy
in a few array operations instead of element by element (~0.3 µs each), so the
digest is the one the dispatch gives.

The standard library's values (dates, decimals, paths...), buffers, and the
synchronisation objects, queues and weak containers that are control rather than
data are hashed by ``hashers/stdlib.py``, registered as soon as this module loads.

The hashers of data libraries live in ``lazyflow/keys/hashers/`` (numpy, pandas,
pyarrow, polars, xarray, scipy.sparse, torch), one module each, installed
lazily the first time a value of their library is hashed; arrays go through
their buffers without a copy (xxh3 runs at ~14 GB/s here, against ~0.5 GB/s
for md5 or joblib.hash). This module knows nothing of graphs or caches.
"""

from __future__ import annotations

import collections
import copyreg
import enum
import struct
import types
from collections.abc import Callable
from typing import Any, NoReturn

import xxhash

from lazyflow.errors import HashingError

__all__ = ["Hasher", "hash_read_value", "hash_value", "own_wrapped", "register_code_hasher",
           "register_hasher", "registered_hashers"]

HasherFn = Callable[["Hasher", Any], None]
"""A type's hasher: writes the object's content into the :class:`Hasher`."""


class Hasher:
    """A stream of tagged chunks folded into one xxh3-128 digest.

    User hashers registered with :func:`register_hasher` return a plain value
    instead and never see this class; built-in hashers write into it directly.
    """

    __slots__ = ("_h", "_pinned", "_reduced", "code_reads")

    def __init__(self, *, code_reads: bool = False) -> None:
        self._h = xxhash.xxh3_128()
        # a value code reads (a global...): a queue or weak container in it cannot be keyed
        self.code_reads = code_reads
        # objects hashed by reduction so far, by id, in order: one met again (a cycle, or
        # sharing) is written as a back-reference, as pickle's memo does, so a graph with
        # much sharing costs its size, not its number of paths; pinned so no id is reused
        self._reduced: dict[int, int] = {}
        self._pinned: list[Any] = []

    def tag(self, tag: bytes) -> None:
        """Write a type tag."""
        self._h.update(tag)

    def chunk(self, data: bytes | memoryview) -> None:
        """Write a length-prefixed chunk of bytes."""
        self._h.update(_LEN.pack(len(data) if isinstance(data, bytes) else data.nbytes))
        self._h.update(data)

    def value(self, obj: Any) -> None:
        """Write any value, dispatching on its type."""
        _dispatch(type(obj))(self, obj)

    def met_before(self, obj: Any) -> bool:
        """Write a back-reference and return True if ``obj`` was written before in this
        digest; otherwise remember it (and keep it alive, so its id is not reused by a
        temporary made later in the same digest) and return False."""
        seen = self._reduced.get(id(obj))
        if seen is not None:
            self._h.update(b"^" + _LEN.pack(seen))
            return True
        self._reduced[id(obj)] = len(self._reduced)
        self._pinned.append(obj)
        return False

    def hexdigest(self) -> str:
        """Return the digest of everything written so far."""
        return self._h.hexdigest()


_LEN = struct.Struct("<Q")
_FLOAT = struct.Struct("<d")


def hash_value(obj: Any) -> str:
    """Return the content digest of ``obj`` as 32 hex characters.

    Deterministic across processes and ``PYTHONHASHSEED``. Values that can
    behave differently never share a digest, even when they compare equal: the
    type counts (``list`` and ``tuple`` differ), and so does a ``dict``'s
    insertion order (its iteration order); a ``set`` has no order to count.

    >>> hash_value([1, 2]) == hash_value((1, 2))
    False
    >>> hash_value({"a": 1, "b": 2}) == hash_value({"b": 2, "a": 1})
    False
    >>> hash_value({1, 2}) == hash_value({2, 1})
    True
    """
    try:
        return _hexdigest(obj)
    except HashingError as e:
        _raise_inside(e, obj)


def hash_read_value(obj: Any) -> str:
    """:func:`hash_value` of a value that code reads (a global, a closure cell, a default, a
    class or module attribute), for code fingerprints: the same digest, except that a queue
    or weak container anywhere in it raises :class:`HashingError`. Its items change without
    the name being rebound, and a digest by type alone would serve results computed from
    other items. A hasher registered for its type (``lf.register_hasher``) decides instead.
    """
    try:
        return _hexdigest(obj, code_reads=True)
    except HashingError as e:
        _raise_inside(e, obj)


def _raise_inside(e: HashingError, obj: Any) -> NoReturn:
    """Raise ``e`` for ``obj``: the part that failed is named (its type is what to register
    a hasher for), and so is the value it sits in: "a Thread" is found where "a
    TextIOWrapper" is not."""
    outer = _type_name(obj)
    if e.type_name == outer or type(e) is not HashingError:  # NotServable stays what it is
        raise e
    raise HashingError(e.type_name, f"{e.reason}; it sits inside the {outer} value") from e


def _hexdigest(obj: Any, code_reads: bool = False) -> str:
    """:func:`hash_value` without naming the outer value in its errors."""
    scalar = _SCALARS.get(type(obj))
    if scalar is not None:  # the whole stream of a scalar in one call: 3x faster
        return xxhash.xxh3_128_hexdigest(scalar(obj))
    one_call = _ONE_CALL.get(type(obj))
    if one_call is not None:  # lists and tuples of scalars only: nothing a code read minds
        digest = one_call(obj)
        if digest is not None:
            return digest
    hasher = Hasher(code_reads=code_reads)
    try:
        hasher.value(obj)
    except RecursionError as e:
        raise HashingError(_type_name(obj), "it is nested too deeply or refers to itself") from e
    return hasher.hexdigest()


# --------------------------------------------------------------------------- registry

_HASHERS: dict[type, HasherFn] = {}
_USER_HASHERS: dict[type, Callable[[Any], Any]] = {}
_LAZY: dict[str, Callable[[], object]] = {}
_DISPATCH_CACHE: dict[type, HasherFn] = {}


def register_hasher(cls: type, fn: Callable[[Any], Any]) -> None:
    """Teach :func:`hash_value` a type: ``fn(obj)`` returns a hashable stand-in.

    The stand-in (bytes, a tuple, a string...) is hashed in place of ``obj``,
    together with the type's qualified name. Subclasses use the hasher of
    their nearest registered base.

    >>> class Point:
    ...     def __init__(self, x, y): self.x, self.y = x, y
    >>> register_hasher(Point, lambda p: (p.x, p.y))
    >>> hash_value(Point(1, 2)) == hash_value(Point(1, 2))
    True
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_hasher needs a type, got {cls!r}")
    if not callable(fn):
        raise TypeError(f"register_hasher needs a callable hasher for {cls.__qualname__}, got {fn!r}")
    _USER_HASHERS[cls] = fn

    def _user(h: Hasher, obj: Any) -> None:
        h.tag(b"U")
        cls = type(obj)  # a subclass hashed by its base's hasher still differs from the base
        h.chunk(f"{cls.__module__}.{cls.__qualname__}".encode())
        h.value(fn(obj))

    _HASHERS[cls] = _user
    _SCALARS.pop(cls, None)
    _ONE_CALL.pop(cls, None)
    if cls in _flat.KINDS:  # flat.py writes these types' lists itself: no longer
        global _flat_write
        _flat_write = _no_flat_write
        _ONE_CALL.pop(list, None)
        _ONE_CALL.pop(tuple, None)
    _DISPATCH_CACHE.clear()


def registered_hashers() -> types.MappingProxyType[type, Callable[[Any], Any]]:
    """A read-only view of the hashers registered with :func:`register_hasher`."""
    return types.MappingProxyType(_USER_HASHERS)


def _builtin(*classes: type) -> Callable[[HasherFn], HasherFn]:
    def deco(fn: HasherFn) -> HasherFn:
        for cls in classes:
            _HASHERS[cls] = fn
        return fn

    return deco


def _dispatch(cls: type) -> HasherFn:
    fn = _DISPATCH_CACHE.get(cls)
    if fn is not None:
        return fn
    fn = _resolve(cls)
    _DISPATCH_CACHE[cls] = fn
    return fn


def _resolve(cls: type) -> HasherFn:
    for base in cls.__mro__:
        if base in _USER_HASHERS:
            return _HASHERS[base]
        root = base.__module__.partition(".")[0]
        if root in _LAZY:
            _LAZY.pop(root)()
            return _resolve(cls)
    if issubclass(cls, enum.Enum):  # before int or str: IntEnum 1 is not 1
        return _hash_enum
    for base in cls.__mro__:
        if base in _HASHERS:
            fn = _HASHERS[base]
            return fn if base is cls else _subclass(fn, with_state=base in _PLAIN_BUILTINS)
    return _hash_object


_PLAIN_BUILTINS = frozenset({int, float, complex, str, bytes, tuple, list, dict, set, frozenset})


def _subclass(base_hasher: HasherFn, *, with_state: bool) -> HasherFn:
    """A subclass of a hashed type: its own type first (a namedtuple is not a tuple), then
    the base's content; for subclasses of plain built-ins also the instance's attributes."""
    def _hash_subclass(h: Hasher, obj: Any) -> None:
        h.tag(b"<")
        _CODE[0](h, type(obj))
        base_hasher(h, obj)
        if with_state:
            state = getattr(obj, "__dict__", None)
            h.value(dict(state) if state else None)

    return _hash_subclass


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- builtins


@_builtin(type(None))
def _hash_none(h: Hasher, obj: None) -> None:
    h.tag(b"N")


@_builtin(bool)
def _hash_bool(h: Hasher, obj: bool) -> None:
    h.tag(b"T" if obj else b"F")


@_builtin(int)
def _hash_int(h: Hasher, obj: int) -> None:
    h.tag(b"i")
    h.chunk(obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True))


@_builtin(float)
def _hash_float(h: Hasher, obj: float) -> None:
    h.tag(b"f")
    h.chunk(_FLOAT.pack(obj))  # -0.0 keeps its sign: 1 / x tells them apart


@_builtin(complex)
def _hash_complex(h: Hasher, obj: complex) -> None:
    h.tag(b"c")
    h.chunk(_FLOAT.pack(obj.real) + _FLOAT.pack(obj.imag))


@_builtin(str)
def _hash_str(h: Hasher, obj: str) -> None:
    h.tag(b"s")
    h.chunk(obj.encode("utf-8", "surrogatepass"))


@_builtin(bytes)
def _hash_bytes(h: Hasher, obj: bytes) -> None:
    h.tag(b"b")
    h.chunk(obj)


def _stream(tag: bytes, data: bytes) -> bytes:
    """What ``Hasher.tag(tag); Hasher.chunk(data)`` feeds, as one bytes object."""
    return tag + _LEN.pack(len(data)) + data


# exact scalar types -> their whole stream, for hash_value's one-call fast path; each must
# give the very bytes its hasher above writes (tests check both paths agree)
_ONE_CALL: dict[type, Callable[[Any], str | None]] = {}
"""Types with a whole-digest shortcut for their common case (``None``: take the stream)."""
_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda obj: b"N",
    bool: lambda obj: b"T" if obj else b"F",
    int: lambda obj: _stream(b"i", obj.to_bytes((obj.bit_length() + 8) // 8, "little",
                                                 signed=True)),
    float: lambda obj: _stream(b"f", _FLOAT.pack(obj)),
    str: lambda obj: _stream(b"s", obj.encode("utf-8", "surrogatepass")),
    bytes: lambda obj: _stream(b"b", obj),
}


def _hash_tuple(h: Hasher, obj: tuple[Any, ...]) -> None:
    update = h._h.update
    if len(obj) >= _FLAT_LENGTH and _flat_write(update, obj):
        return  # a long tuple of one scalar type, inside a value: at buffer speed
    update(b"(" + _LEN.pack(len(obj)))
    _write_items(h, update, obj)


def _hash_list(h: Hasher, obj: list[Any]) -> None:
    """A list met twice in one value is written once, then referred to: ``[a, a]`` is not
    ``[[1], [1]]`` (appending to ``x[0]`` changes ``x[1]`` in one of them only), as
    pickle, and so the disk cache, keeps it. The same holds for dicts, sets and
    bytearrays; tuples and other immutable values are written in full each time."""
    memo = h._reduced  # met_before, inlined: this is the hot path of nested values
    seen = memo.get(id(obj))
    if seen is not None:
        h._h.update(b"^" + _LEN.pack(seen))
        return
    memo[id(obj)] = len(memo)
    h._pinned.append(obj)
    update = h._h.update
    if len(obj) >= _FLAT_LENGTH and _flat_write(update, obj):
        return  # a long list of one scalar type, inside a value: at buffer speed
    update(b"L" + _LEN.pack(len(obj)))
    _write_items(h, update, obj)


def _write_items(h: Hasher, update: Callable[[bytes], object], items: Any) -> None:
    """Write each item of a list or tuple: a scalar's whole stream in one update."""
    for item in items:
        scalar = _SCALARS.get(type(item))
        if scalar is not None:
            update(scalar(item))
        else:
            _dispatch(type(item))(h, item)


_HASHERS[list] = _hash_list
_HASHERS[tuple] = _hash_tuple


def _unordered(tag: bytes) -> HasherFn:
    def _hash_unordered(h: Hasher, obj: Any) -> None:
        h.tag(tag)
        digests = sorted(_hexdigest(m, h.code_reads) for m in obj)
        h._h.update(_LEN.pack(len(digests)))
        for d in digests:
            h._h.update(bytes.fromhex(d))

    return _hash_unordered


_hash_set_members = _unordered(b"S")
_HASHERS[frozenset] = _unordered(b"Z")


@_builtin(set)
def _hash_set(h: Hasher, obj: set[Any]) -> None:
    if not h.met_before(obj):  # shared or not: see _hash_list
        _hash_set_members(h, obj)


def _hash_items(h: Hasher, obj: Any) -> None:
    """In insertion order: ``pd.DataFrame(d)``, ``json.dumps(d)`` and iteration follow it."""
    h.tag(b"D")
    h._h.update(_LEN.pack(len(obj)))
    for key, value in obj.items():
        _dispatch(type(key))(h, key)
        _dispatch(type(value))(h, value)


@_builtin(dict)
def _hash_dict(h: Hasher, obj: dict[Any, Any]) -> None:
    if h.met_before(obj):  # shared or not: see _hash_list
        return
    update = h._h.update
    update(b"D" + _LEN.pack(len(obj)))
    for key, value in obj.items():
        scalar = _SCALARS.get(type(key))  # a scalar's whole stream in one update
        if scalar is not None:
            update(scalar(key))
        else:
            _dispatch(type(key))(h, key)
        scalar = _SCALARS.get(type(value))
        if scalar is not None:
            update(scalar(value))
        else:
            _dispatch(type(value))(h, value)


@_builtin(types.MappingProxyType)
def _hash_mappingproxy(h: Hasher, obj: types.MappingProxyType[Any, Any]) -> None:
    h.tag(b"X")  # read-only: a node writing into it fails where it writes into a dict
    _hash_items(h, obj)


@_builtin(collections.defaultdict)
def _hash_defaultdict(h: Hasher, obj: collections.defaultdict[Any, Any]) -> None:
    if h.met_before(obj):
        return
    h.tag(b"y")
    h.value(obj.default_factory)  # what a missing key reads as is behaviour
    _hash_items(h, obj)


_CODE: list[HasherFn] = []
"""The code hasher (one slot): functions, classes and modules are hashed by their code."""


def register_code_hasher(fn: HasherFn) -> None:
    """Install the hasher of code objects; :mod:`lazyflow.keys.fingerprint` registers itself.

    It lives above this module (fingerprints read values, values carry code):
    registration, not an import, keeps this module at the bottom of the layers.
    """
    _CODE[:] = [fn]
    _DISPATCH_CACHE.clear()


def _hash_code(h: Hasher, obj: Any) -> None:
    if not _CODE:
        raise HashingError(_type_name(obj), "no code hasher is registered: import lazyflow")
    _CODE[0](h, obj)


for _code_type in (type, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                   types.ModuleType, types.CodeType, types.WrapperDescriptorType,
                   types.MethodWrapperType, types.MethodDescriptorType,
                   types.ClassMethodDescriptorType):
    _HASHERS[_code_type] = _hash_code


def _hash_enum(h: Hasher, obj: enum.Enum) -> None:
    """Its class (by code: editing the enum counts), name and value."""
    h.tag(b"E")
    _hash_code(h, type(obj))
    h.value(obj._name_)
    h.value(obj._value_)


def _hash_object(h: Hasher, obj: Any) -> None:
    """Any other object, by what pickling would rebuild it from: ``__reduce_ex__(4)``.

    The class (through the code hasher), the constructor and its arguments, the
    state, and list or dict items, each hashed as a value: deterministic across
    processes, and a function inside (a ``partial``'s) counts by its code. An
    object met again (a cycle, or one shared by two parts) is written as a
    back-reference to its first occurrence: sharing counts, as pickle keeps it.
    """
    if h.met_before(obj):
        return
    reducer = copyreg.dispatch_table.get(type(obj))  # as pickle does: numpy's ufuncs are there
    try:
        reduced = reducer(obj) if reducer is not None else obj.__reduce_ex__(4)
    except Exception as e:
        raise HashingError(_type_name(obj), f"it cannot be reduced to its state ({e})") from e
    h.tag(b"O")
    _hash_code(h, type(obj))
    wrapped = own_wrapped(obj)
    if wrapped is not None:  # an lru_cache (or other) wrapper pickles by name: its code counts
        h.value(wrapped)
    if isinstance(reduced, str):  # a module-level singleton, named
        h.chunk(reduced.encode())
        return
    rebuild, args, state, items, pairs = (tuple(reduced) + (None,) * 5)[:5]
    h.value(rebuild)
    h.value(args)
    h.value(_slots_in_order(obj, state))
    h.value(None if items is None else list(items))
    h.value(None if pairs is None else list(pairs))


def own_wrapped(obj: Any) -> Any:
    """``obj``'s own ``__wrapped__`` attribute, if it has one, read without making its
    ``__dict__``: reading ``obj.__dict__`` of a ``functools.partial`` that has none makes
    an empty one, which its reduced state then holds (``{}`` where it held ``None``), so
    the second digest of the same partial differed from the first."""
    try:
        wrapped = object.__getattribute__(obj, "__wrapped__")
    except Exception:  # none, or a descriptor that fails: nothing wrapped
        return None
    # a class attribute (a method or property named so) is the class's, hashed with it
    return None if any("__wrapped__" in vars(c) for c in type(obj).__mro__) else wrapped


def _slots_in_order(obj: Any, state: Any) -> Any:
    """The reduced state with its slot values in name order.

    A slotted object's default state is ``(instance dict or None, {slot: value})``,
    the slot dict in the order ``__slots__`` iterates, which for ``__slots__ = {"a",
    "b"}`` (a set) depends on ``PYTHONHASHSEED``. Unpickling only sets those
    attributes one by one, so their order is no behaviour: sorted by name, the digest
    is the same in every process. A class with its own ``__setstate__`` reads its
    state as it likes, order included, so its state is left as it is.
    """
    if (type(state) is tuple and len(state) == 2 and type(state[1]) is dict
            and not hasattr(obj, "__setstate__")):
        slots = state[1]
        if all(type(name) is str for name in slots):
            return (state[0], dict(sorted(slots.items())))
    return state


# --------------------------------------------------------------------------- installing


def _install(cls: type, fn: HasherFn) -> bool:
    """Make ``fn`` the built-in hasher of ``cls``, unless a user registered one first."""
    if cls in _USER_HASHERS:
        return False
    _HASHERS[cls] = fn
    _DISPATCH_CACHE.clear()
    return True




# --------------------------------------------------------------------------- flat lists

# a long list or tuple of one exact scalar type: the same stream, built at buffer speed (flat.py)
from lazyflow.keys import flat as _flat  # noqa: E402  (imports nothing of lazyflow)

_ONE_CALL[list] = _ONE_CALL[tuple] = _flat.list_digest
_FLAT_LENGTH = _flat.MIN_LENGTH  # shorter lists and tuples are not even offered to flat.py


def _no_flat_write(update: Callable[[bytes], object], items: Any) -> bool:
    """:func:`flat.write_list` once a hasher is registered for a type it writes."""
    return False


_flat_write: Callable[[Callable[[bytes], object], Any], bool] = _flat.write_list


# --------------------------------------------------------------------------- lazyflow/keys/hashers/

from lazyflow.keys.hashers import registrar as _registrar  # noqa: E402  (imports no library)

_registrar("stdlib")()  # the standard library's values: no library to wait for
_LAZY["numpy"] = _registrar("numpy")
_LAZY["pandas"] = _registrar("pandas")
_LAZY["pyarrow"] = _registrar("arrow")
_LAZY["polars"] = _registrar("polars")
_LAZY["xarray"] = _registrar("xarray")
_LAZY["scipy"] = _registrar("sparse")
_LAZY["torch"] = _registrar("torch")
