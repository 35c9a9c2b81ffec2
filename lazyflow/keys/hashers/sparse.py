"""scipy.sparse digests: every format, as matrix (``spmatrix``) and as array (``sparray``).

Design note
-----------
A sparse value's digest is its tag, its class (which tells the format, csr,
csc, coo, bsr, dia, lil or dok, and whether ``*`` is a matrix product), its
shape, its dtype, then its stored arrays *as stored*, each through numpy's
hasher (dtype, shape, buffer): ``data``, ``indices`` and ``indptr`` (csr, csc,
bsr, plus the block size), ``coords`` and ``data`` (coo), ``data`` and
``offsets`` (dia), ``rows`` and ``data`` (lil), the items (dok).

Storage is not canonicalised. Two matrices that compare equal can hold
duplicate entries, unsorted indices or explicit zeros differently, and that
is behaviour: ``.data``, ``.indices`` and ``.nnz`` differ, and so does what
``sum_duplicates`` or ``sort_indices`` later do in place. Canonicalising
would also cost a copy. So they digest differently (a recomputation, never a
wrong value), and ``has_canonical_format`` and ``has_sorted_indices`` are in
the digest too: public flags that code can read and that steer scipy's own
algorithms. For compressed formats scipy computes a flag it does not know yet
(one pass over the indices) and remembers it on the object.

Any other format falls back to its ``tocoo()`` form, after its class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import scipy.sparse as sp

from lazyflow.keys.hashing import Hasher, _install

__all__ = ["register"]

_SPARSE = b"\xd1"


def _compressed(h: Hasher, m: Any) -> None:
    h.value((m.has_sorted_indices, m.has_canonical_format))
    h.value(m.data)
    h.value(m.indices)
    h.value(m.indptr)
    if m.format == "bsr":
        h.value(tuple(m.blocksize))


def _coo(h: Hasher, m: Any) -> None:
    h.value(m.has_canonical_format)
    h.value(tuple(m.coords))
    h.value(m.data)


def _dia(h: Hasher, m: Any) -> None:
    h.value(m.data)
    h.value(m.offsets)


def _lil(h: Hasher, m: Any) -> None:
    h.value(m.rows)
    h.value(m.data)


def _dok(h: Hasher, m: Any) -> None:
    h.value(dict(m.items()))


_FORMATS: dict[str, Callable[[Hasher, Any], None]] = {
    "csr": _compressed, "csc": _compressed, "bsr": _compressed,
    "coo": _coo, "dia": _dia, "lil": _lil, "dok": _dok,
}


def _hash_sparse(h: Hasher, m: Any) -> None:
    h.tag(_SPARSE)
    h.value(type(m))
    h.value(tuple(int(n) for n in m.shape))
    h.value(m.dtype.str)
    write = _FORMATS.get(m.format)
    if write is None:
        h.value(m.tocoo())
    else:
        write(h, m)


def register() -> None:
    """Install the scipy.sparse hasher on both class families.

    dok classes are named on their own: they also derive from ``dict``, which
    comes before ``sparray`` in their MRO and would hash them as a plain dict.
    """
    for cls in (sp.sparray, sp.spmatrix, sp.dok_array, sp.dok_matrix):
        _install(cls, _hash_sparse)
