"""torch digests: dense tensors on the CPU.

Design note
-----------
A tensor's digest is its tag, its class (a ``Parameter`` is not a plain
``Tensor``), its dtype, its shape, its dimension names, ``requires_grad``, its
values and, for a leaf, its accumulated ``.grad``. The values are read in
place through a ``uint8`` view of the contiguous tensor (any dtype, bfloat16
and float8 included, without a copy), so the buffer goes through xxh3 at
memory speed. Memory layout (strides, ``channels_last``) and the lazy
conjugate and negation bits are representation, as C and Fortran order are
for numpy: a tensor digests as its values, laid out contiguously. The autograd
graph behind a non-leaf tensor is not a value and is not in the digest (a
cached value never carries one).

Only dense tensors in CPU memory are hashed. A tensor on another device
raises :class:`~lazyflow.errors.HashingError`: hashing it would hide a copy
to the host, and a synchronisation with the device, in every key; the error
says to pass ``tensor.cpu()``. Sparse, quantized and other non-strided
layouts raise too, naming the layout.
"""

from __future__ import annotations

from typing import Any

import torch
import xxhash

from lazyflow.errors import HashingError
from lazyflow.keys.hashing import Hasher, _install

__all__ = ["register"]

_TENSOR = b"\xe1"


def _check_hashable(t: torch.Tensor) -> None:
    name = f"{type(t).__module__}.{type(t).__qualname__}"
    if t.device.type != "cpu":
        raise HashingError(name, f"it lives on device {str(t.device)!r} and lazyflow hashes CPU "
                                 "tensors only, so that no copy to the host hides in a cache key; "
                                 "pass tensor.cpu() instead")
    if t.is_quantized:
        raise HashingError(name, "it is quantized and lazyflow hashes dense tensors of plain "
                                 "dtypes only; pass tensor.dequantize()")
    if t.layout != torch.strided:
        raise HashingError(name, f"its layout is {t.layout} and lazyflow hashes dense (strided) "
                                 "tensors only; pass tensor.to_dense()")


def _values_digest(t: torch.Tensor) -> bytes:
    """xxh3-128 of the values, contiguous, read through a byte view (no copy if contiguous)."""
    values = t.detach().resolve_conj().resolve_neg().contiguous()
    return xxhash.xxh3_128_digest(values.reshape(-1).view(torch.uint8).numpy().data)


def _hash_tensor(h: Hasher, t: Any) -> None:
    _check_hashable(t)
    h.tag(_TENSOR)
    h.value(type(t))
    h.value(str(t.dtype))
    h.value(tuple(t.shape))
    h.value(getattr(t, "names", None))  # named dimensions, in the torch versions that have them
    h.value(t.requires_grad)
    h.chunk(_values_digest(t))
    h.value(t.grad if t.is_leaf else None)  # .grad of a non-leaf is never filled (torch warns)


def register() -> None:
    """Install the tensor hasher (subclasses such as ``nn.Parameter`` use it too)."""
    _install(torch.Tensor, _hash_tensor)
