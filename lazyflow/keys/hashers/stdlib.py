"""Value digests of the standard library's values: dates and times, decimals, fractions,
UUIDs, paths, ranges, buffers (``bytearray``, ``memoryview``), and the synchronisation
objects, queues and weak containers that are control rather than data; and lists of
strings at C speed (:func:`hash_strings`, for the numpy and pandas hashers' object
columns).

Design note
-----------
These need no library, so ``hashing.py`` registers them as soon as it is imported
(through :func:`registrar`, as the libraries' hashers are, so that this module imports
``hashing.py`` and never the other way round). Each writes the details that change
behaviour: a ``datetime``'s tz *identity* (UTC and Europe/London at one offset differ), a
``Decimal``'s exponent (``Decimal("1.0")`` prints unlike ``Decimal("1.00")``), a path's
flavour. Locks, events, conditions, semaphores and barriers hash by their type alone;
queues and weak containers too as values, but code that reads one cannot be keyed by
what it holds (``Hasher.code_reads``), so its fingerprint gets an error and the node is
not cached.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import fractions
import pathlib
import queue
import threading
import uuid
import weakref
from typing import Any

from lazyflow.errors import HashingError
from lazyflow.keys.hashing import _LEN, Hasher, HasherFn, _install, _type_name

__all__ = ["hash_strings", "register"]


def register() -> None:
    """Install the standard library's hashers (unless a user registered one first)."""
    hashers: dict[type, HasherFn] = {
        _dt.datetime: _hash_datetime, _dt.date: _hash_datetime, _dt.time: _hash_datetime,
        _dt.timedelta: _hash_timedelta, decimal.Decimal: _hash_decimal,
        fractions.Fraction: _hash_fraction, uuid.UUID: _hash_uuid,
        pathlib.PurePath: _hash_path, range: _hash_range, bytearray: _hash_bytearray,
        memoryview: _hash_memoryview}
    for control in (threading.Event, threading.Barrier, threading.Condition,
                    threading.Semaphore, type(threading.Lock()), type(threading.RLock())):
        hashers[control] = _hash_control
    for holder in (queue.Queue, queue.SimpleQueue, weakref.WeakKeyDictionary,
                   weakref.WeakValueDictionary, weakref.WeakSet):
        hashers[holder] = _hash_held_items
    for cls, fn in hashers.items():
        _install(cls, fn)


def _hash_datetime(h: Hasher, obj: _dt.date | _dt.time) -> None:
    """Fields, fold and the tz *identity*: UTC and Europe/London at one offset differ."""
    h.tag(b"d")
    h.chunk(f"{type(obj).__name__}:{obj.isoformat()}:{getattr(obj, 'fold', 0)}".encode())
    h.value(getattr(obj, "tzinfo", None))


def _hash_timedelta(h: Hasher, obj: _dt.timedelta) -> None:
    """Days, seconds and microseconds."""
    h.tag(b"e")
    h.chunk(f"{obj.days}:{obj.seconds}:{obj.microseconds}".encode())


def _hash_decimal(h: Hasher, obj: decimal.Decimal) -> None:
    """Sign, digits and exponent."""
    h.tag(b"m")  # sign, digits and exponent exactly: Decimal("1.0") prints unlike "1.00"
    sign, digits, exponent = obj.as_tuple()
    h.chunk(f"{sign}:{''.join(map(str, digits))}:{exponent}".encode())


def _hash_fraction(h: Hasher, obj: fractions.Fraction) -> None:
    """Numerator and denominator."""
    h.tag(b"r")
    h.value((obj.numerator, obj.denominator))


def _hash_uuid(h: Hasher, obj: uuid.UUID) -> None:
    """Its 16 bytes."""
    h.tag(b"u")
    h.chunk(obj.bytes)


def _hash_path(h: Hasher, obj: pathlib.PurePath) -> None:
    """Its flavour (a ``PurePosixPath`` is not a ``PosixPath``) and its text."""
    h.tag(b"p")
    h.chunk(f"{type(obj).__name__}:{obj.as_posix()}".encode())


def _hash_range(h: Hasher, obj: range) -> None:
    """Start, stop and step."""
    h.tag(b"g")
    h.value((obj.start, obj.stop, obj.step))


def _hash_control(h: Hasher, obj: Any) -> None:
    """Synchronisation objects are control, not data: they hash by type alone."""
    h.tag(b"K")
    h.chunk(_type_name(obj).encode())


def _hash_held_items(h: Hasher, obj: Any) -> None:
    """Queues and weak containers hold items that change in place. An input one is a
    control channel (or a cache), keyed by its type as a lock is; one that code reads
    cannot be keyed by what it holds (a queue's items are not even visible without taking
    them), so a code fingerprint gets an error and the node is not cached."""
    if h.code_reads:
        raise HashingError(_type_name(obj), "its items change in place and lazyflow keys a "
                           "queue or weak container by its type only")
    _hash_control(h, obj)


def _hash_bytearray(h: Hasher, obj: bytearray) -> None:
    """Its bytes; held twice in one value, a back-reference (as ``hashing._hash_list``)."""
    if h.met_before(obj):
        return
    h.tag(b"B")
    h.chunk(bytes(obj))


def _hash_memoryview(h: Hasher, obj: memoryview) -> None:
    """Its layout, then its bytes in C order: a view's format, item size and shape decide
    what ``len(view)``, ``view[0]`` and ``view.tolist()`` give (the bytes ``01 00 02 00``
    are ``[1, 2]`` as ``'h'`` but ``[131073]`` as ``'i'``), and a read-only view refuses
    writes; a bytearray with the same bytes is another type again."""
    try:
        layout = f"{obj.format}|{obj.itemsize}|{obj.shape}|{obj.readonly}"
        data = obj.cast("B") if obj.c_contiguous else obj.tobytes()
    except ValueError as e:  # a released view
        raise HashingError(_type_name(obj), str(e)) from e
    h.tag(b"V")
    h.chunk(layout.encode())
    h.chunk(data)


def hash_strings(h: Hasher, items: list[Any]) -> bool:
    """Write a list of ``str`` at C speed; return False (writing nothing) if one is not a str.

    Hashing element by element costs ~0.3 µs a string. Instead the strings are
    joined with NUL and hashed once (~15 ns a string). Joining alone is
    ambiguous (``['a-b', 'c']`` against ``['a', 'b-c']`` with '-'), so the
    join is trusted only when it holds exactly one NUL per gap, i.e. no string
    contains NUL; otherwise every string's length is written first.
    """
    try:
        joined = "\0".join(items)
    except TypeError:  # not all strings (None, NaN, numbers...)
        return False
    if joined.count("\0") == len(items) - 1:
        h.tag(b"J")
        h._h.update(_LEN.pack(len(items)))
    else:
        h.tag(b"K")
        h.chunk(b"".join(_LEN.pack(len(item)) for item in items))
    h.chunk(joined.encode("utf-8", "surrogatepass"))
    return True
