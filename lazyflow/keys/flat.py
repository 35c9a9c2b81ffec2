"""Flat lists of one scalar type at buffer speed: their digest, and their elements' ids.

Design note
-----------
A list of 20,000 ints costs ~6 ms to digest element by element through the
type dispatch of ``hashing.py`` (~0.3 µs an element), and a map node digests
its mapped list, its result list and each element: at that rate the
bookkeeping of a map costs more than storing its values. When every element
is of one *exact* type — ``int`` (within int64), ``float``, ``str`` or
``bytes``; never a subclass, and never ``bool`` among ints — the stream
``hashing.py`` would write is built here with numpy in a few array
operations and hashed in one xxh3 call (~0.03 µs an element):

* :func:`list_digest` feeds xxh3 the *very bytes* the generic path would for
  such a list (or tuple), so ``lf.hash_value`` gives the same digest either
  way and no key changes (``tests/test_flat.py`` holds both paths to the
  same bytes, with hypothesis); :func:`write_list` writes that stream into a
  digest under way, for such a list or tuple inside a value (a dict of
  columns, say: 9 against 18 ms for three lists of 20,000 elements). A
  hasher registered for ``int``, ``float``, ``str`` or ``bytes`` turns both
  off, so such lists follow it;
* :func:`scalar_ids` gives each element's *id* for a map's manifest
  (``model/mapping.py``): 16 bytes that identify the element exactly. An int
  of int64 range is ``INT_TAG`` + its 8 bytes, a float ``FLOAT_TAG`` + its 8
  IEEE bytes (so ``-0.0`` and every NaN payload count), anything else the 16
  bytes of its ``lf.hash_value`` digest. The tags keep the kinds apart: ``1``,
  ``True`` (a digest) and ``1.0`` never share an id. :func:`scalar_id` is the
  same rule for one element, and the two agree on every element.

Anything else (mixed types, big ints, short lists, numpy not installed)
returns ``None`` and the caller takes the generic path: this module only
ever makes a digest faster, never different. numpy is imported the first
time a long flat list is met, not with lazyflow.
"""

from __future__ import annotations

import array
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

import xxhash

__all__ = ["FLOAT_TAG", "INT_TAG", "KINDS", "MIN_LENGTH", "all_distinct", "element_type",
           "find_id", "list_digest", "scalar_id", "scalar_ids", "write_list"]

MIN_LENGTH: Final = 64
"""Shorter lists take the generic path: numpy's fixed cost would outweigh the saving."""
INT_TAG: Final = b"\x00lf-int\x00"
"""The first 8 bytes of the id of an int within int64 (:func:`scalar_id`)."""
FLOAT_TAG: Final = b"\x00lf-flt\x00"
"""The first 8 bytes of the id of a float (:func:`scalar_id`)."""

_LEN = struct.Struct("<Q")
_FLOAT = struct.Struct("<d")
_INT64_MIN = -(2**63)
_TAGS = {int: b"i", float: b"f", str: b"s", bytes: b"b"}
KINDS: Final = frozenset(_TAGS)
"""The element types written here; a hasher registered for one of them turns this off."""
_SEQUENCE_TAGS = {list: b"L", tuple: b"("}
_NUMPY: list[ModuleType | None] = []  # [numpy] or [None] once looked for
_THRESHOLDS: Any = None  # numpy arrays made when numpy is first imported (_numpy)
_WIDTHS: Any = None
_MAX_RUNS = 64  # more runs of one int record size than this: one boolean mask instead


def _numpy() -> ModuleType | None:
    global _THRESHOLDS, _WIDTHS
    if not _NUMPY:
        try:
            import numpy
        except ImportError:  # not installed: every list takes the generic path
            numpy = None  # type: ignore[assignment]
        else:
            _THRESHOLDS = numpy.array([2 ** (8 * k - 1) for k in range(1, 8)], dtype=numpy.int64)
            # row k: which of a widest int record's 17 bytes a record of k bytes keeps
            _WIDTHS = numpy.arange(17)[None, :] < (9 + numpy.arange(9))[:, None]
        _NUMPY.append(numpy)
    return _NUMPY[0]


def element_type(items: list[Any] | tuple[Any, ...]) -> type | None:
    """The one exact scalar type of every element, or ``None``."""
    if len(items) < MIN_LENGTH:
        return None
    kind = type(items[0])
    if kind not in _TAGS:
        return None
    # one C-level pass: type() of each, then an identity count (bool is not int here)
    return kind if list(map(type, items)).count(kind) == len(items) else None


# --------------------------------------------------------------------------- the list's stream


def list_digest(items: list[Any] | tuple[Any, ...]) -> str | None:
    """``lf.hash_value(items)`` for a list or tuple of one exact scalar type, at buffer speed;
    ``None`` when the generic path must hash it."""
    digest = xxhash.xxh3_128()
    return digest.hexdigest() if write_list(digest.update, items) else None


def write_list(update: Callable[[bytes], object], items: list[Any] | tuple[Any, ...]) -> bool:
    """Write, with ``update``, the stream ``hashing.py`` writes for ``items`` (a list or
    tuple of one exact scalar type) at buffer speed, as a top-level value or a part of
    one; ``False``, writing nothing, when the generic path must write it."""
    tag = _SEQUENCE_TAGS.get(type(items))
    kind = element_type(items) if tag is not None else None
    np = _numpy() if kind is not None else None
    if np is None or tag is None or kind is None:
        return False
    parts = _records(np, items, kind)
    if parts is None:
        return False
    update(tag + _LEN.pack(len(items)))  # what hashing.py writes before the elements
    for part in parts:
        update(part)
    return True


def _records(np: Any, items: Any, kind: type) -> list[Any] | None:
    """The elements' records, as the generic path writes them, as contiguous uint8 arrays
    to hash in order."""
    if kind is float:
        return [_float_records(np, items)]
    if kind is int:
        return _int_records(np, items)
    return [_sized_records(np, items, kind)]


def _float_records(np: Any, items: Any) -> Any:
    """``b"f" | u64 8 | <d`` per element: one packed record array."""
    records = np.empty(len(items), dtype=np.dtype([("tag", "u1"), ("size", "<u8"),
                                                   ("value", "<f8")]))
    records["tag"] = ord("f")
    records["size"] = 8
    records["value"] = np.frombuffer(array.array("d", items), dtype=np.float64)
    return records.view(np.uint8)


def _int_records(np: Any, items: Any) -> list[Any] | None:
    """``b"i" | u64 k | k bytes`` per element, ``k = (bit_length + 8) // 8`` as ``_hash_int``
    writes them: the low ``k`` bytes of the int64's two's complement."""
    try:
        values = np.frombuffer(array.array("q", items), dtype=np.int64).astype("<i8", copy=False)
    except OverflowError:  # beyond int64: the generic path
        return None
    if (values == _INT64_MIN).any():  # its magnitude overflows int64: the generic path
        return None
    # k = 1 + how many of 2**7, 2**15, ..., 2**55 the magnitude reaches; each record is
    # built at its widest (17 bytes), then cut to its 9 + k bytes
    sizes = 1 + np.searchsorted(_THRESHOLDS, np.abs(values), side="right")
    records = np.zeros((len(items), 17), dtype=np.uint8)
    records[:, 0] = ord("i")
    records[:, 1] = sizes  # the u64 length: its low byte (k <= 8), the rest stay zero
    records[:, 9:] = values.view(np.uint8).reshape(len(items), 8)
    # runs of one record size (e.g. 0..127, then 128..32767 in a range): a slice each,
    # copied contiguous — 4x faster than the general mask, which many short runs take
    bounds = np.flatnonzero(sizes[1:] != sizes[:-1]) + 1
    if len(bounds) > _MAX_RUNS:
        return [records[_WIDTHS[sizes]]]
    starts = [0, *bounds.tolist()]
    ends = [*starts[1:], len(items)]
    return [np.ascontiguousarray(records[a:b, :9 + int(sizes[a])]).ravel()
            for a, b in zip(starts, ends, strict=True)]


def _sized_records(np: Any, items: Any, kind: type) -> Any:
    """``b"s" | u64 length | utf-8`` (or ``b"b"`` and the bytes) per element."""
    if kind is str:
        joined = "".join(items)
        if joined.isascii():  # one byte per character: lengths without encoding each
            payload = joined.encode("ascii")
            sizes = np.fromiter(map(len, items), dtype=np.uint64, count=len(items))
        else:
            encoded = [item.encode("utf-8", "surrogatepass") for item in items]
            payload = b"".join(encoded)
            sizes = np.fromiter(map(len, encoded), dtype=np.uint64, count=len(items))
    else:
        payload = b"".join(items)
        sizes = np.fromiter(map(len, items), dtype=np.uint64, count=len(items))
    lengths = 9 + sizes.astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    heads = starts[:, None] + np.arange(9)[None, :]
    body = np.ones(len(out), dtype=bool)
    body[heads] = False
    out[body] = np.frombuffer(payload, dtype=np.uint8)
    out[starts] = ord(_TAGS[kind])
    out[heads[:, 1:]] = sizes.astype("<u8").view(np.uint8).reshape(len(items), 8)
    return out


# --------------------------------------------------------------------------- element ids


def scalar_id(item: Any) -> bytes | None:
    """The manifest id of an exact int within int64 or an exact float; ``None`` for any other
    value (its id is then its ``lf.hash_value`` digest's 16 bytes)."""
    kind = type(item)
    if kind is int and _INT64_MIN <= item < 2**63:
        return INT_TAG + int(item).to_bytes(8, "little", signed=True)
    if kind is float:
        return FLOAT_TAG + _FLOAT.pack(item)
    return None


def scalar_ids(items: list[Any] | tuple[Any, ...]) -> bytes | None:
    """The ids of every element (16 bytes each, in order) of a list of exact ints within
    int64 or of exact floats, at buffer speed; ``None`` for any other list."""
    kind = element_type(items)
    np = _numpy() if kind in (int, float) else None
    if np is None:
        return None
    out = np.empty((len(items), 2), dtype="<u8")
    if kind is int:
        try:
            values = np.frombuffer(array.array("q", items), dtype=np.int64)
        except OverflowError:
            return None
        out[:, 0] = np.frombuffer(INT_TAG, dtype="<u8")[0]
    else:
        values = np.frombuffer(array.array("d", items), dtype=np.float64)
        out[:, 0] = np.frombuffer(FLOAT_TAG, dtype="<u8")[0]
    out[:, 1] = values.astype(values.dtype.newbyteorder("<"), copy=False).view("<u8")
    return bytes(out.data)


def find_id(ids: bytes, element: bytes) -> int:
    """The index of the 16-byte id ``element`` among ``ids`` (concatenated ids), or -1."""
    np = _numpy() if len(ids) >= MIN_LENGTH * 16 else None
    if np is None:
        at = ids.find(element)
        while at != -1 and at % 16:  # a match across two ids: look further
            at = ids.find(element, at + 1)
        return -1 if at == -1 else at // 16
    # bytes.find crawls here: ids share their 8-byte tag, and a small int's last bytes
    # are zeros, so its skip table rarely skips; two column compares do not care
    table = np.frombuffer(ids, dtype="<u8").reshape(-1, 2)
    low, high = np.frombuffer(element, dtype="<u8")
    for index in np.flatnonzero(table[:, 1] == high):
        if table[index, 0] == low:
            return int(index)
    return -1


def all_distinct(ids: bytes) -> bool:
    """True when no two of the 16-byte ``ids`` can be equal, told at buffer speed from their
    last 8 bytes (distinct there, distinct ids); False when some may be (or no numpy)."""
    np = _numpy() if len(ids) >= MIN_LENGTH * 16 else None
    if np is None:
        return False
    halves = np.sort(np.frombuffer(ids, dtype="<u8")[1::2])
    return not bool((halves[1:] == halves[:-1]).any())

