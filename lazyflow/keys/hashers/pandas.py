"""Value digests of pandas frames, series, indexes, timestamps and timedeltas.

Design note
-----------
A frame is its columns as an index (labels, dtype, name), its ``attrs``, its
index (names, dtype, freq) and each column: numbers through their numpy
buffers, Arrow-backed ``str`` columns through their Arrow buffers, strings in
object columns joined safely at C speed (``stdlib.hash_strings``), missing
values by position and kind, anything else value by value (``[1, None]`` and
``["1", None]`` differ), categoricals by categories, their order, ``ordered``
and codes, other extension types through pandas' own hashing (their dtype is
written first). Timestamps and timedeltas keep their nanoseconds, unit and tz
identity. Installed lazily by ``hashing.py`` the first time a pandas value is
hashed.
"""

from __future__ import annotations

from typing import Any

from lazyflow.keys.hashers.numpy import register as register_numpy
from lazyflow.keys.hashers.stdlib import hash_strings
from lazyflow.keys.hashing import _LAZY, Hasher, _install

__all__ = ["register"]


def register() -> None:
    """Install the pandas hashers (and numpy's, which they use)."""
    import numpy as np
    import pandas as pd

    _LAZY.pop("numpy", None)
    hash_ndarray = register_numpy()
    masked = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)

    def _column(h: Hasher, col: Any) -> None:
        """One column (a Series or an Index): raw buffers for numbers, one hash per element
        for mixed objects (``[1, None]`` and ``["1", None]`` must differ), pandas' own
        hashing for other extension types."""
        dtype = col.dtype
        h.chunk(str(dtype).encode())
        if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
            hash_ndarray(h, col.to_numpy())  # no copy for numpy-backed columns
        elif isinstance(dtype, pd.CategoricalDtype):  # categories, their order, ordered
            values = pd.Categorical(col)
            _index(h, dtype.categories)
            h.value(bool(dtype.ordered))
            hash_ndarray(h, np.asarray(values.codes))
        elif isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
            # pandas 3's default str columns: their Arrow buffers, through the Arrow hasher
            # (lazyflow/keys/hashers/arrow.py), not a list of a million Python strings
            h.value(col.array.__arrow_array__())
        elif col.dtype == object or isinstance(dtype, pd.StringDtype):
            values = col.to_numpy(dtype=object)
            missing = pd.isna(values)  # vectorised: where, and which kind (None, nan, NA...)
            if missing.any():
                h.tag(b"?")
                hash_ndarray(h, np.flatnonzero(missing))
                h.value([type(v).__name__ for v in values[missing].tolist()])
                values = values[~missing]
            items = values.tolist()
            if not hash_strings(h, items):  # strings at C speed; anything else one by one
                h.value(items)
        else:
            _extension(h, col.array)

    def _extension(h: Hasher, values: Any) -> None:
        """An extension array (its dtype is written): its own buffers, exactly. pandas'
        ``hash_pandas_object`` is no substitute: it folds each element into 64 bits and
        makes ``-0.0`` and ``0.0`` one (a nullable, Arrow-backed or sparse column of
        ``[-0.0]`` would meet ``[0.0]``), and it fails on Arrow lists."""
        dtype = values.dtype
        if isinstance(values, masked):  # Int64, Float64, boolean: values where set, the mask
            zero = dtype.numpy_dtype.type(0)  # what sits under a NA is no value: a constant
            hash_ndarray(h, values.to_numpy(dtype=dtype.numpy_dtype, na_value=zero))
            hash_ndarray(h, np.asarray(values.isna()))
        elif isinstance(dtype, pd.ArrowDtype):  # through the Arrow hasher (arrow.py)
            h.value(values.__arrow_array__())
        elif isinstance(dtype, pd.DatetimeTZDtype):  # the tz identity, as for a Timestamp
            h.value(dtype.tz)
            hash_ndarray(h, np.asarray(values.asi8))
        elif isinstance(dtype, pd.PeriodDtype):  # ordinals; the frequency is in the dtype
            hash_ndarray(h, np.asarray(values.asi8))
        elif isinstance(dtype, pd.IntervalDtype):  # both ends; which side is closed: dtype
            _column(h, values.left)
            _column(h, values.right)
        elif isinstance(dtype, pd.SparseDtype):  # as stored: explicit fill values count
            h.value(dtype.fill_value)
            h.value(len(values))
            hash_ndarray(h, np.asarray(values.sp_values))
            hash_ndarray(h, np.asarray(values.sp_index.indices))
        else:  # another library's extension array: by its state, as any object
            h.value(values)

    def _index(h: Hasher, index: Any) -> None:
        h.tag(b"I")
        h.value(list(index.names))
        h.value(getattr(index, "freqstr", None))
        if isinstance(index, pd.RangeIndex):
            h.value((index.start, index.stop, index.step))
        elif isinstance(index, pd.MultiIndex):
            # levels and codes, as stored: a one-level MultiIndex is no Index of its
            # values (it yields tuples), and levels no row uses still show in .levels
            h.tag(b"M")
            h.value(index.nlevels)
            for level, codes in zip(index.levels, index.codes, strict=True):
                _column(h, level)
                hash_ndarray(h, np.asarray(codes))
        else:
            _column(h, index)

    def _flags(h: Hasher, obj: Any) -> None:
        """Refusing duplicate labels is behaviour (operations that would make one raise);
        written only when set, so the digests of every other frame stay as they were."""
        if not obj.flags.allows_duplicate_labels:
            h.tag(b"!")

    def _hash_series(h: Hasher, s: Any) -> None:
        h.tag(b"R")
        _flags(h, s)
        h.value(s.name)
        h.value(dict(s.attrs))
        _index(h, s.index)
        _column(h, s)

    def _hash_frame(h: Hasher, df: Any) -> None:
        h.tag(b"W")
        _flags(h, df)
        _index(h, df.columns)  # labels, their dtype and the columns' name
        h.value(dict(df.attrs))
        _index(h, df.index)
        for i in range(df.shape[1]):
            _column(h, df.iloc[:, i])

    def _hash_timestamp(h: Hasher, ts: Any) -> None:
        """Nanoseconds, unit and tz identity (a Timestamp is a datetime with more detail)."""
        h.tag(b"n")
        h.value((ts.value, getattr(ts, "unit", "ns"), ts.fold))
        h.value(ts.tzinfo)

    def _hash_timedelta(h: Hasher, td: Any) -> None:
        h.tag(b"v")
        h.value((td.value, getattr(td, "unit", "ns")))

    _install(pd.Series, _hash_series)
    _install(pd.DataFrame, _hash_frame)
    _install(pd.Index, _index)
    _install(pd.Timestamp, _hash_timestamp)
    _install(pd.Timedelta, _hash_timedelta)
