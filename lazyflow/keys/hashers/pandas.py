"""Value digests of pandas frames, series, indexes, timestamps and timedeltas.

Design note
-----------
A frame is its columns as an index (labels, dtype, name), its ``attrs``, its
index (names, dtype, freq) and each column: numbers through their numpy
buffers, Arrow-backed ``str`` columns through their Arrow buffers, strings in
object columns joined safely at C speed (``hashing._hash_strings``), missing
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
from lazyflow.keys.hashing import _LAZY, Hasher, _hash_strings, _install

__all__ = ["register"]


def register() -> None:
    """Install the pandas hashers (and numpy's, which they use)."""
    import numpy as np
    import pandas as pd

    _LAZY.pop("numpy", None)
    hash_ndarray = register_numpy()

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
            if not _hash_strings(h, items):  # strings at C speed; anything else one by one
                h.value(items)
        else:  # numeric extension types (nullable, tz-aware, periods...): dtype above
            hashed = pd.util.hash_pandas_object(col, index=False, categorize=False)
            hash_ndarray(h, np.asarray(hashed))

    def _index(h: Hasher, index: Any) -> None:
        h.tag(b"I")
        h.value(list(index.names))
        h.value(getattr(index, "freqstr", None))
        if isinstance(index, pd.RangeIndex):
            h.value((index.start, index.stop, index.step))
        elif isinstance(index, pd.MultiIndex):
            for level in range(index.nlevels):
                _column(h, index.get_level_values(level))
        else:
            _column(h, index)

    def _hash_series(h: Hasher, s: Any) -> None:
        h.tag(b"R")
        h.value(s.name)
        h.value(dict(s.attrs))
        _index(h, s.index)
        _column(h, s)

    def _hash_frame(h: Hasher, df: Any) -> None:
        h.tag(b"W")
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
