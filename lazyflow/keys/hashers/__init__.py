"""Native value digests for data libraries: numpy, pandas and beyond.

Design note
-----------
Each module here teaches :func:`lazyflow.hash_value` one library and has one
job: ``numpy`` (arrays, masked arrays, scalars), ``pandas`` (frames, series,
indexes, timestamps), ``arrow`` (pyarrow arrays, chunked arrays, tables, record batches),
``polars`` (frames and series), ``xarray`` (data arrays and datasets),
``sparse`` (scipy.sparse matrices and arrays) and ``torch`` (CPU tensors);
``stdlib`` teaches it the standard library's values, and needs no library, so
``hashing.py`` registers it as soon as it loads. Each exposes ``register()``, which installs its hashers with
``hashing._install``; ``hashing.py`` maps each library's top-level module name
to :func:`registrar` of its module, so a module here, and the library it
hashes, is imported only when a value of that library is first hashed:
``import lazyflow`` imports none of them.

The rule every hasher here follows: every detail that changes behaviour is in
the digest; values of one type that agree in every digested detail give equal
digests; digests are deterministic across processes and ``PYTHONHASHSEED``.
Details (dtypes, names, attributes) are written as *values* with
``Hasher.value``, never joined into strings, and numeric payloads go through
their buffers (Arrow buffers, numpy arrays) at xxh3 speed, never element by
element. docs/caching.md lists what each type's digest covers.

Type tags, one byte each, chosen outside hashing.py's ASCII tags so the two
can never meet (a value's stream starts with its tag, so distinct tags keep
types apart):

====  ======================  ====  ===========================
tag   type                    tag   type
====  ======================  ====  ===========================
0xA1  pyarrow Array           0xB1  polars Series
0xA2  pyarrow ChunkedArray    0xB2  polars DataFrame
0xA3  pyarrow RecordBatch     0xC1  xarray DataArray
0xA4  pyarrow Table           0xC2  xarray Dataset
0xD1  scipy.sparse            0xE1  torch Tensor
====  ======================  ====  ===========================
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["registrar"]


def registrar(module: str) -> Callable[[], None]:
    """Return a function that imports ``lazyflow.keys.hashers.<module>`` and runs its ``register()``.

    ``hashing.py`` keeps these in its lazy table, so the module (and the
    library it hashes) is imported the first time a value of that library is
    hashed, never at ``import lazyflow``.
    """

    def register() -> None:
        importlib.import_module(f"{__name__}.{module}").register()

    return register
