"""xarray digests: DataArray and Dataset.

Design note
-----------
Every variable (a DataArray's own, each coordinate, each data variable) is
written as its dimension names, its values as a numpy array (numpy's hasher:
dtype, shape and buffer, without a copy when contiguous), its ``attrs`` and
its ``encoding``. Lazily loaded data (dask, or a file opened with
``open_dataset``) is loaded to be hashed: the digest is of the values.

``encoding`` is in the digest because it changes behaviour: ``to_netcdf`` and
``to_zarr`` write by it (dtype, scale factor, fill value, chunks). It also
holds ``source`` for a dataset read from a file, so the same values read from
two paths digest differently; that costs a recomputation, never a wrong value.

Mappings (coordinates, data variables) are written in their order, as
``list(ds)`` shows them. Which coordinates are indexed, and by what kind of
index, is written too: it decides what ``.sel`` does. A DataArray adds its
name; a Dataset its dimension sizes and its own ``attrs`` and ``encoding``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import xarray as xr

from lazyflow.keys.hashing import Hasher, _install

__all__ = ["register"]

_DATA_ARRAY, _DATASET = b"\xc1", b"\xc2"


def _write_variable(h: Hasher, var: xr.Variable) -> None:
    h.value(tuple(var.dims))
    h.value(var.values)  # always a numpy array: numpy's hasher, loading lazy data
    h.value(dict(var.attrs))
    h.value(dict(var.encoding))


def _write_variables(h: Hasher, variables: Mapping[Any, Any]) -> None:
    """Write ``name -> DataArray or Variable`` in order."""
    h.value(len(variables))
    for name, item in variables.items():
        h.value(name)
        _write_variable(h, getattr(item, "variable", item))


def _write_indexes(h: Hasher, obj: xr.DataArray | xr.Dataset) -> None:
    h.value([(name, type(index)) for name, index in obj.xindexes.items()])


def _hash_data_array(h: Hasher, da: xr.DataArray) -> None:
    h.tag(_DATA_ARRAY)
    h.value(da.name)
    _write_variable(h, da.variable)
    _write_variables(h, da.coords)
    _write_indexes(h, da)


def _hash_dataset(h: Hasher, ds: xr.Dataset) -> None:
    h.tag(_DATASET)
    h.value(list(ds.sizes.items()))  # dimensions, even those without a variable of their own
    _write_variables(h, ds.data_vars)
    _write_variables(h, ds.coords)
    _write_indexes(h, ds)
    h.value(dict(ds.attrs))
    h.value(dict(ds.encoding))


def register() -> None:
    """Install the xarray hashers."""
    _install(xr.DataArray, _hash_data_array)
    _install(xr.Dataset, _hash_dataset)
