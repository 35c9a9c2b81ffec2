"""polars digests: Series and DataFrame.

Design note
-----------
A Series' digest is its tag, its name, its dtype and its content. The dtype is
walked as a value: its class, then each parameter (time unit, time zone,
precision and scale, inner dtype, array shape, struct fields with their names,
an Enum's categories in order, a Categorical's categories mapping by name,
namespace and physical type), nested dtypes recursively.

The content goes through Arrow: each of the Series' chunks is exported with
``to_arrow()`` (zero-copy for numbers) and fed into the column streams of
:mod:`lazyflow.keys.hashers.arrow`, so nulls are positions, values under a null
never count, NaN is a value distinct from null, and chunking leaves no trace.

Categorical and Enum columns are hashed by their *strings*. polars keeps the
categories of a Categorical in a mapping shared by the whole process that
grows as strings are first seen, so its physical codes (and the dictionary
``to_arrow`` exports) depend on what the process met before: hashing them
would make digests differ across processes. The strings are the values; the
categories mapping is in the dtype. An Enum's categories are fixed and are in
its dtype.

The sorted flags polars records (``Series.flags``) are hints that describe the
values, not values: they are not in the digest. Object columns hold arbitrary
Python objects and are hashed through ``hash_value`` of ``to_list()``.

A DataFrame's digest is its tag, its height and its columns, in order, each as
a Series (so the column names are the series' names).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from lazyflow.keys.hashers.arrow import write_chunks
from lazyflow.keys.hashing import Hasher, _install

__all__ = ["dtype_value", "register"]

_SERIES, _FRAME = b"\xb1", b"\xb2"


def dtype_value(dtype: Any) -> tuple[Any, ...]:
    """A polars dtype as a plain nested tuple: its class name, then its parameters by name.

    >>> dtype_value(pl.Datetime("us", "UTC"))
    ('Datetime', (('time_unit', 'us'), ('time_zone', 'UTC')))
    """
    if isinstance(dtype, type):  # a bare class such as pl.Int64 stands for its instance
        dtype = dtype()
    params = tuple((name, _param(value)) for name, value in sorted(vars(dtype).items()))
    return (type(dtype).__qualname__, params)


def _param(value: Any) -> Any:
    """One dtype parameter as a plain value."""
    if isinstance(value, pl.DataType) or (isinstance(value, type) and issubclass(value, pl.DataType)):
        return dtype_value(value)
    if isinstance(value, pl.Field):
        return ("Field", value.name, dtype_value(value.dtype))
    if isinstance(value, pl.Series):  # an Enum's categories
        return ("Series", value.name, dtype_value(value.dtype), value.to_list())
    if isinstance(value, pl.Categories):
        return ("Categories", value.name(), value.namespace(), dtype_value(value.physical()))
    if isinstance(value, (list, tuple)):
        return type(value)(_param(item) for item in value)
    return value


def _as_strings(dtype: Any) -> Any:
    """``dtype`` with every Categorical and Enum, at any depth, replaced by String."""
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return pl.String()
    if isinstance(dtype, pl.List):
        return pl.List(_as_strings(dtype.inner))
    if isinstance(dtype, pl.Array):
        return pl.Array(_as_strings(dtype.inner), dtype.shape)
    if isinstance(dtype, pl.Struct):
        return pl.Struct([pl.Field(f.name, _as_strings(f.dtype)) for f in dtype.fields])
    return dtype


def _holds(dtype: Any, cls: type) -> bool:
    """Whether ``dtype`` is, or nests, a ``cls``."""
    if isinstance(dtype, cls):
        return True
    if isinstance(dtype, (pl.List, pl.Array)):
        return _holds(dtype.inner, cls)
    if isinstance(dtype, pl.Struct):
        return any(_holds(f.dtype, cls) for f in dtype.fields)
    return False


def _hash_series(h: Hasher, s: pl.Series) -> None:
    h.tag(_SERIES)
    h.value(s.name)
    h.value(dtype_value(s.dtype))
    if _holds(s.dtype, pl.Object):  # arbitrary Python objects: no Arrow form
        h.value(s.to_list())
        return
    strings = _as_strings(s.dtype)
    if strings != s.dtype:
        s = s.cast(strings)
    chunks = [chunk.to_arrow() for chunk in s.get_chunks()] or [s.to_arrow()]
    write_chunks(h, chunks[0].type, chunks)


def _hash_frame(h: Hasher, df: pl.DataFrame) -> None:
    h.tag(_FRAME)
    h.value(df.height)
    h.value(df.get_columns())


def register() -> None:
    """Install the polars hashers."""
    _install(pl.Series, _hash_series)
    _install(pl.DataFrame, _hash_frame)
