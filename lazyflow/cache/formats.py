"""Formats of common values that decode without running code: bytes, JSON, arrays, frames.

Design note
-----------
Policy. A pickle stream names the code that rebuilds its value, so reading
one runs code; a value read from a shared cache is then only as safe as
everyone who can write there. Most values a node returns are plain data,
so :func:`encode` stores those in formats whose readers build values
without importing or calling anything the bytes name:

* ``bytes``: a ``bytes`` object, as is (one frame);
* ``json``: ``None``, ``bool``, ``int``, ``float``, ``str``, and ``list``
  and ``dict`` (``str`` keys) of those, as compact JSON (one frame);
* ``numpy``: an ``ndarray`` of a numeric, boolean, datetime, timedelta,
  bytes or unicode dtype: a JSON header (dtype, shape, order) and the raw
  bytes, as ``.npy`` files hold them (no ``object`` dtype, no structured
  dtype, no subclass);
* ``arrow``: a pandas ``DataFrame`` or ``Series`` of the column and index
  types below, as an Arrow IPC stream (pyarrow 14.0.1 or newer: older ones
  unpickle extension types on reading), after a JSON header;
* ``flat``: a ``list`` of at least ``keys.flat.MIN_LENGTH`` elements all
  exact ``int`` within int64, or all exact ``float``: a one-byte type code
  and the elements as little-endian machine values — signed ints of the
  fewest bytes that hold the list's extremes (``b``, ``h``, ``i``, ``q``: 1,
  2, 4, 8 bytes; ``range(5000)`` takes 2 bytes an element where JSON took
  4.9), or 8-byte floats (``d``).
  A map's result list is typically such a list: 20,000 ints encode in
  0.3 ms where JSON took 1.8, and read back in 0.2 ms where JSON took 1.1
  (and NaN payloads survive, which JSON's ``NaN`` does not keep).

Exact, or not at all. A hit must be the value the function returned, so a
value is taken only when the format gives it back exactly; anything else
returns ``None`` here and is pickled as before. JSON takes exact types only
(``True`` is not ``1``, a ``tuple`` is not a ``list``, an ``int``
subclass is neither), every float (``-0.0``, NaN, infinities: Python's JSON
writes and reads them), dict key order; it refuses a container met twice
(JSON would split what pickle keeps shared), more than
:data:`JSON_ITEMS` items (JSON is several times slower than pickle on long
lists) or :data:`JSON_DEPTH` levels, and ints over :data:`INT_BITS` bits.
Arrow takes what round-trips through Arrow and back to pandas exactly
(checked against ``pandas.testing`` in ``tests/test_cache_encodings.py``):
columns named by unique ``str`` labels; numpy bool, int, uint, float,
datetime64 and timedelta64 columns in native byte order, timezone-aware
datetimes whose zone Arrow gives back as itself (a ``zoneinfo`` zone or a
fixed offset; ``datetime.timezone.utc`` comes back as ``ZoneInfo("UTC")``, so
it is pickled), the nullable ``Int``/``UInt``/``Float``/``boolean`` types,
Arrow-backed strings (pandas 3's ``str``), categoricals of such categories,
periods; a ``RangeIndex``, an ``Index`` of numbers, booleans or such strings,
or a ``DatetimeIndex`` without a ``freq``; no ``attrs``. Object columns,
Python-backed strings, multi-indexes and the rest are pickled.

Versions. ``bytes``, ``json``, ``numpy`` and ``arrow`` are the serializers of
encoding 2 (``serialize.py``), ``flat`` the one of encoding 3: an entry in
one of them is stamped with that encoding (:data:`ENCODING_OF`), so that a
lazyflow that knows only older encodings treats it as an unknown encoding
(a miss, kept) rather than as damage. Pickled entries keep encoding 1.
"""

from __future__ import annotations

import array
import importlib
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from lazyflow.keys.flat import element_type

__all__ = ["ENCODING_OF", "INT_BITS", "JSON_DEPTH", "JSON_ITEMS", "SERIALIZERS",
           "compact_encoder", "decode", "encode", "owner"]

ENCODING_OF = {"bytes": 2, "json": 2, "numpy": 2, "arrow": 2, "flat": 3}
"""Each serializer this module writes and reads, with the encoding version that added it."""
SERIALIZERS = frozenset(ENCODING_OF)
"""The serializers this module writes and reads."""

JSON_ITEMS = 65536
"""Items (list elements and dict values, all levels) above which a value is pickled."""
JSON_DEPTH = 64
"""Nesting levels above which a value is pickled."""
INT_BITS = 8192
"""Bits above which an int is pickled (Python limits the digits of int <-> str)."""

_ARRAY_KINDS = frozenset("biufcmMSU")
_SERIES_COLUMN = "__lazyflow_series__"
_MASKED = frozenset({"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
                     "Float32", "Float64", "boolean"})
_PYARROW_SAFE = (14, 0, 1)  # CVE-2023-47248: older pyarrow unpickles extension types


def encode(value: Any) -> tuple[str, tuple[memoryview, ...]] | None:
    """The serializer and frames of ``value`` in a format read without running code, or
    ``None`` when none gives it back exactly (then it is pickled).

    >>> encode([1, 2.0, None])[0], encode((1, 2)) is None
    ('json', True)
    """
    kind = type(value)
    if kind is bytes:
        return "bytes", (memoryview(value),)
    if kind is list:
        flat = _encode_flat(value)
        if flat is not None:
            return flat
    if kind in (str, int, float, bool, list, dict) or value is None:
        return ("json", (memoryview(_json(value)),)) if _json_exact(value) else None
    numpy = sys.modules.get("numpy")
    if numpy is not None and kind is numpy.ndarray:
        return _encode_array(value, numpy)
    pandas = sys.modules.get("pandas")
    if pandas is not None and kind in (pandas.DataFrame, pandas.Series):
        return _encode_frame(value, pandas)
    return None


def decode(serializer: str, frames: tuple[memoryview, ...]) -> Any:
    """The value of frames :func:`encode` wrote. ``ImportError`` when a library it needs is
    missing here; ``ValueError`` (or another error) when the frames are not such a value."""
    if serializer == "bytes":
        (data,) = frames
        return bytes(data)
    if serializer == "json":
        (text,) = frames
        return json.loads(bytes(text))
    if serializer == "numpy":
        return _decode_array(*frames)
    if serializer == "arrow":
        return _decode_frame(*frames)
    if serializer == "flat":
        return _decode_flat(*frames)
    raise ValueError(f"unknown serializer {serializer!r}")


# ----------------------------------------------------------------------------- flat lists


def _typecode(size: int, kinds: str) -> str | None:
    """This platform's ``array`` type code of ``size`` bytes among ``kinds``, if any."""
    return next((code for code in kinds if array.array(code).itemsize == size), None)


# stored code -> (bytes per value, this platform's array type code): ints of the fewest
# bytes that hold the list's extremes, signed, and 8-byte floats
_FLAT = {stored: (size, code) for stored, size, code in (
    ("b", 1, _typecode(1, "b")), ("h", 2, _typecode(2, "h")), ("i", 4, _typecode(4, "hil")),
    ("q", 8, _typecode(8, "lq")), ("d", 8, _typecode(8, "d"))) if code is not None}
_INT_SIZES = [(stored, size) for stored, (size, _) in _FLAT.items() if stored != "d"]


def _encode_flat(value: list[Any]) -> tuple[str, tuple[memoryview, ...]] | None:
    """A long list of exact int64 ints or exact floats as its machine values, or ``None``."""
    kind = element_type(value)
    if kind is float:
        stored: str | None = "d"
    elif kind is int:
        stored = _int_code(min(value), max(value))
    else:
        return None
    if stored is None or stored not in _FLAT:
        return None
    try:
        items = array.array(_FLAT[stored][1], value)
    except (OverflowError, TypeError):  # the list changed since it was checked: JSON or
        return None  # pickle takes it, checking again
    if sys.byteorder != "little":
        items.byteswap()
    return "flat", (memoryview(stored.encode("ascii")), memoryview(items).cast("B"))


def _int_code(smallest: int, largest: int) -> str | None:
    """The stored code of the fewest bytes that hold ints from ``smallest`` to ``largest``
    (``None`` beyond int64)."""
    for stored, size in _INT_SIZES:
        bound = 1 << (8 * size - 1)
        if -bound <= smallest and largest < bound:
            return stored
    return None


def _decode_flat(code: memoryview, data: memoryview) -> list[Any]:
    stored = bytes(code).decode("ascii")
    if stored not in _FLAT:
        raise ValueError(f"unknown flat type code {stored!r}")
    items = array.array(_FLAT[stored][1])
    items.frombytes(data)  # ValueError unless a whole number of values
    if sys.byteorder != "little":
        items.byteswap()
    return items.tolist()


# ----------------------------------------------------------------------------- JSON


def _json(value: Any) -> bytes:
    """Compact JSON in UTF-8 (text stays as small as pickle keeps it); a lone surrogate,
    which UTF-8 cannot hold, as ``surrogatepass`` writes it, which ``json.loads`` reads."""
    return _dumps(value).encode("utf-8", "surrogatepass")


def compact_encoder(plain: Callable[[Any], str], probe: Any, *,
                    default: Callable[[Any], Any] | None = None,
                    ascii_only: bool = False) -> Callable[[Any], str]:
    """``plain`` — a ``json.dumps`` with separators ``(",", ":")`` and these ``default``
    and ``ensure_ascii`` options — with its C encoder built once.

    ``json.dumps`` with options builds an encoder per call: 1.0-2.0 µs of the 1.3-2.6 µs
    it took for a small value or an entry's metadata (several per computed node). The
    C encoder is built without the circular check, whose state would make it unsafe to
    share between threads (callers encode plain data, or refuse a container met twice
    first). Where the C encoder is missing, takes other arguments, or does not write
    ``probe`` as ``plain`` does, ``plain`` itself.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain
    strings = json.encoder.encode_basestring_ascii if ascii_only \
        else json.encoder.encode_basestring
    try:
        fast = make(None, default, strings, None, ":", ",", False, False, True)
        if "".join(fast(probe, 0)) != plain(probe):
            return plain
    except Exception:  # a Python whose C encoder takes other arguments
        return plain
    return lambda value: "".join(fast(value, 0))


def _plain_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_dumps = compact_encoder(_plain_dumps, [1, -0.0, 1e300, float("nan"), float("-inf"), None,
                                         True, "\n\u00e9\"\ud800", {"k": [2**70]}])


def _json_exact(value: Any) -> bool:
    """Whether JSON gives ``value`` back exactly (design note); walks it without recursion."""
    seen: set[int] = set()
    budget = JSON_ITEMS
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str or kind is float or kind is bool or item is None:
            continue
        if kind is int:
            if item.bit_length() > INT_BITS:
                return False
            continue
        if kind is not list and kind is not dict:
            return False
        budget -= len(item)
        if depth >= JSON_DEPTH or budget < 0 or id(item) in seen:
            return False
        seen.add(id(item))
        if kind is list:
            kinds = set(map(type, item))
            if kinds <= _JSON_SCALARS:  # flat: checked at C speed (20,000 ints: 8 -> 0.5 ms)
                if int in kinds and not _ints_fit(item, kinds):
                    return False
                continue
        if kind is dict:
            if any(type(key) is not str for key in item):
                return False
            stack.extend((member, depth + 1) for member in item.values())
        else:
            stack.extend((member, depth + 1) for member in item)
    return True


_JSON_SCALARS = frozenset({str, float, bool, int, type(None)})


def _ints_fit(items: list[Any], kinds: set[type]) -> bool:
    """Whether every int of a flat list fits in :data:`INT_BITS` bits."""
    if kinds == {int}:  # the largest magnitudes are the extremes
        largest: int = max(items)
        smallest: int = min(items)
        return largest.bit_length() <= INT_BITS and smallest.bit_length() <= INT_BITS
    return all(i.bit_length() <= INT_BITS for i in items if type(i) is int)


# ----------------------------------------------------------------------------- numpy


def _encode_array(array: Any, numpy: Any) -> tuple[str, tuple[memoryview, ...]] | None:
    dtype = array.dtype
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.names is not None \
            or dtype.subdtype is not None or dtype.metadata is not None or dtype.itemsize == 0 \
            or numpy.dtype(dtype.str) != dtype:
        return None
    if array.flags.c_contiguous:
        order, data = "C", array
    elif array.flags.f_contiguous:  # stored as its transpose's C-ordered bytes, no copy
        order, data = "F", array.T
    else:
        order, data = "C", numpy.ascontiguousarray(array)
    header = _json({"dtype": dtype.str, "shape": list(array.shape), "order": order})
    raw = data.reshape(-1).view(numpy.uint8)  # any dtype's bytes, even those memoryview refuses
    return "numpy", (memoryview(header), memoryview(raw))


def owner(frame: memoryview) -> Any:
    """The numpy array a frame was read into, when the frame is all of it, else the frame.

    Arrays decoded from the array then view it rather than a memoryview of it, so the
    memory tier, adopting them, can make them read-only for good (``snapshot.py``): numpy
    lets anyone make an array writeable again when it views a writeable memoryview.
    """
    obj: Any = frame.obj
    if type(obj).__name__ == "ndarray" and obj.nbytes == frame.nbytes and frame.contiguous:
        return obj
    return frame


def _decode_array(header_frame: memoryview, data: memoryview) -> Any:
    import numpy

    header = json.loads(bytes(header_frame))
    dtype = numpy.dtype(header["dtype"])
    shape = tuple(header["shape"])
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.names is not None \
            or not all(type(n) is int and n >= 0 for n in shape) \
            or header["order"] not in ("C", "F"):
        raise ValueError(f"array header {header!r} is not one lazyflow writes")
    count = math.prod(shape)
    if count * dtype.itemsize != data.nbytes:
        raise ValueError(f"array of {count} {dtype.str} items in {data.nbytes} bytes")
    flat = numpy.frombuffer(owner(data), dtype=dtype, count=count)
    if header["order"] == "F":
        return flat.reshape(shape[::-1]).T
    return flat.reshape(shape)


# ----------------------------------------------------------------------------- pandas


def _encode_frame(value: Any, pandas: Any) -> tuple[str, tuple[memoryview, ...]] | None:
    pyarrow = _pyarrow()
    if pyarrow is None or not _arrow_exact(value, pandas):
        return None
    series = isinstance(value, pandas.Series)
    frame = value.to_frame(name=_SERIES_COLUMN) if series else value
    try:
        table = pyarrow.Table.from_pandas(frame, preserve_index=None)  # a RangeIndex as metadata
        sink = pyarrow.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    except (pyarrow.ArrowException, TypeError, ValueError):
        return None
    header = _json({"kind": "series" if series else "frame",
                    "name": value.name if series else None})
    return "arrow", (memoryview(header), memoryview(sink.getvalue()))


def _decode_frame(header_frame: memoryview, stream: memoryview) -> Any:
    pyarrow = _pyarrow()
    if pyarrow is None:
        raise ImportError(f"pyarrow {'.'.join(map(str, _PYARROW_SAFE))} or newer is needed "
                          "to read a pandas value stored as Arrow: pip install -U pyarrow")
    header = json.loads(bytes(header_frame))
    table = pyarrow.ipc.open_stream(pyarrow.py_buffer(stream)).read_all()
    table.validate()
    frame = table.to_pandas()
    if header["kind"] == "frame":
        return frame
    series = frame[_SERIES_COLUMN].copy(deep=False)
    series.name = header["name"]
    return series


def _arrow_exact(value: Any, pandas: Any) -> bool:
    """Whether Arrow gives ``value`` back exactly (the types of the design note)."""
    if value.attrs or not value.flags.allows_duplicate_labels:
        return False
    if isinstance(value, pandas.Series):
        return _label(value.name) and _column_type(value.dtype, pandas) \
            and _index(value.index, pandas)
    columns = value.columns
    return (type(columns) is pandas.Index and _label(columns.name) and columns.is_unique
            and _str_labels(columns, pandas) and _index(value.index, pandas)
            and all(_column_type(dtype, pandas) for dtype in value.dtypes))


def _label(name: Any) -> bool:
    return name is None or type(name) is str


def _str_labels(index: Any, pandas: Any) -> bool:
    """Labels that are all ``str``, of the dtype pandas itself gives ``str`` labels (so that
    Arrow's strings come back as that dtype)."""
    if len(index) and pandas.api.types.infer_dtype(index, skipna=False) != "string":
        return False
    return bool(index.dtype == pandas.Index(["a"]).dtype)


def _index(index: Any, pandas: Any) -> bool:
    kind = type(index)
    if not _label(index.name):
        return False
    if kind is pandas.RangeIndex:
        return True
    if kind is pandas.DatetimeIndex:
        return index.freq is None and _column_type(index.dtype, pandas)
    if kind is not pandas.Index:
        return False
    dtype = index.dtype
    if type(dtype).__module__.startswith("numpy") and dtype.kind in ("b", "i", "u", "f"):
        return bool(dtype.isnative)
    return _str_labels(index, pandas)


def _column_type(dtype: Any, pandas: Any) -> bool:
    if type(dtype).__module__.startswith("numpy"):
        return dtype.kind in "biufmM" and bool(dtype.isnative)
    if isinstance(dtype, pandas.DatetimeTZDtype):
        return _tz_exact(dtype.tz)
    if isinstance(dtype, pandas.PeriodDtype):
        return True
    if isinstance(dtype, pandas.StringDtype):
        return bool(dtype.storage == "pyarrow")
    if isinstance(dtype, pandas.CategoricalDtype):
        categories = dtype.categories
        return categories is not None and _index(categories, pandas)
    return str(dtype) in _MASKED and type(dtype).__module__.startswith("pandas")


def _tz_exact(tz: Any) -> bool:
    """Whether Arrow gives the time zone ``tz`` back as itself. Arrow keeps a zone as its
    name: ``datetime.timezone.utc`` (what ``tz="UTC"`` gives in pandas 3) and dateutil's
    zones come back as ``zoneinfo`` zones, which compare unequal to them and digest apart
    (a tz's identity counts, ``lf.hash_value``): such columns are pickled instead."""
    pyarrow = _pyarrow()
    try:
        back = pyarrow.lib.string_to_tzinfo(pyarrow.lib.tzinfo_to_string(tz))
    except Exception:  # noqa: BLE001 - a zone Arrow cannot name: pickled, always exact
        return False
    return type(back) is type(tz) and bool(back == tz)


_PYARROW: list[Any] = []


def _pyarrow() -> Any:
    """pyarrow, when installed and recent enough to read IPC streams without unpickling."""
    if not _PYARROW:
        try:
            module = importlib.import_module("pyarrow")
        except ImportError:
            module = None
        if module is not None and _version(module.__version__) < _PYARROW_SAFE:
            module = None
        _PYARROW.append(module)
    return _PYARROW[0]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
